"""Data: `common` checks, file `readers`, `images` and `text` corpora, the `base` contract.

May import `config` (enumerations) and nothing else of tf_lti.
"""

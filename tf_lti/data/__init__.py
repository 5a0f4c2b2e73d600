"""Data: `common` checks, file `readers`, the `contract`, `images` and `text` corpora, `base`.

`contract.DataSpec` is what a model needs to know of its data without the data
(kind, D or V, image shape, bins, vocabulary, training size); `contract.Dataset`
is the one interface over image (`images.DataSplits`) and text
(`text.TextSplits`) data; `base.load_data` loads the `Dataset` a config names.

May import `config` (enumerations) and nothing else of tf_lti.
"""

"""Data: `common` checks, file `readers`, the `contract`, `images`, `text` and bag-of-words
`documents`, `base`.

`contract.DataSpec` is what a model needs to know of its data without the data
(kind, D or V, image shape, bins, vocabulary, training size, document frequencies);
`contract.Dataset` is the one interface over image (`images.DataSplits`), text
(`text.TextSplits`) and document (`documents.DocumentSplits`) data; `base.load_data`
loads the `Dataset` a config names.

May import `config` (enumerations) and nothing else of tf_lti.
"""

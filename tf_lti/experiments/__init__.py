"""Paper experiments built from the library: `oracle` (Kim et al.'s synthetic oracle),
`paper_tables` (the specs of the paper tables) and `reproduce` (runs one and reports it).

May import every other tf_lti package.
"""

"""Paper experiments built from the library: `oracle` (Kim et al.'s synthetic oracle).

May import every other tf_lti package.
"""

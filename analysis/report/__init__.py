"""The report stage: rendering (`render`), inputs and the CSVs beside each report (`inputs`),
shared display and group-comparison helpers, and one helper module per report notebook.
"""

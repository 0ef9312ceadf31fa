"""The report stage: rendering (`render`), inputs and the CSVs beside each report (`inputs`),
shared display and group-comparison helpers, and one helper module per report notebook.
"""

import sys

# nbformat (under papermill and nbconvert) imports jsonschema, which imports rfc3987_syntax when
# it is installed (jupyterlab's dependencies bring it) only to check the "iri" string format,
# and that module builds two dozen Earley parsers on import: 1-2 s of every report command.
# Notebook schemas use no such format and nbformat checks none, so it is marked absent for
# jsonschema (an optional import it skips), unless something already loaded it.
sys.modules.setdefault("rfc3987_syntax", None)

"""A dataset from a folder of documents or code (``tunedesk data from-folder``): ``build`` runs
walk -> extract -> secrets -> chunks -> dedup; ``skeleton`` is the qa rows' contract."""

"""gradbench.reports: figures, summary tables and HTML pages of results (``gradbench report``), and
comparisons of two sets of results (``gradbench compare``).

Modules: frame (labels, standard errors, pooling of seeds), figures, tables, html, report
(writes a report folder), compare. Importing this package imports neither matplotlib nor
seaborn; the figure functions do, when called.
"""

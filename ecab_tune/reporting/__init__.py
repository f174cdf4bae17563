"""Reports, figures and statistics of what the project measured.

`trials` reads an experiment folder back as records; `importance` ranks its parameters;
`optuna_studies` and `plots` draw the figures, `search_figures` picks and draws the search
report's; `document` renders Markdown or HTML; `search_report` assembles the search report
(`python -m ecab_tune.report` is its command), `baselines` adds a study's plain and SE arms to
it. `stats` (paired intervals, Holm) and `plots` also serve the study's analysis; `cost`
measures a model's MACs and latency for the search's trials and the study's runs; `model_card`
writes an exported checkpoint's card.
"""

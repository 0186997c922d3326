"""`anomalyr1 report`: one self-contained HTML page of a training run or an evaluation.

run.py reads the folder, charts.py draws the curves (matplotlib, inline SVG), gallery.py turns
logged completions and answers into cards with thumbnails, page.py assembles the HTML and
build.py ties them together. Training code never imports this package; it only writes the files
these modules read (metrics.jsonl, recipe.yaml, rollouts/, evals/, answers.json, table.json).
"""

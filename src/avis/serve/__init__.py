"""`avis serve`: a small web app that runs a VideoPredictor on uploaded videos.

  jobs.py      the job queue: server-generated ids, a bounded number of concurrent jobs,
               a bounded waiting line, a temporary folder per job, removal of old jobs
  pipeline.py  one job: check the upload, decode, audio features, model, outputs (the same
               files as `avis predict`), with progress reports
  app.py       the Starlette application (one HTML page + a JSON API)
  page.html    the page: plain HTML/CSS/JS, nothing loaded from elsewhere

Needs the `web` extra (`pip install -e .[web]`: starlette, uvicorn). Importing this package
has no side effects; `avis.cli.serve` builds and runs the app.
"""

"""How the app runs: one uvicorn process (`process`), `--workers N` supervised processes
(`supervisor`), or Ray Serve replicas (`ray_replicas`). Only `serve.__main__` (and the tests)
import these; nothing in the app imports a runner, so the app never depends on how it runs."""

"""Policy search: AWS (run dir, PPO update, stages, job plans) and AdvAA.

Import the modules directly (`hpcaug.search.aws`, `hpcaug.search.jobs`, `hpcaug.search.advaa`);
nothing is imported here so that each stays light and optional.
"""

"""Applications on top of the runtime and engines: restore jobs, benchmark, comparison, evaluation, demo, inspection."""

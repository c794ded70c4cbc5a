"""Real EXO as the sandbox nodes' `exo`: EXO's own code from the snapshot, installed once per machine
(`install`), our stand-ins for its Rust transport and the node shim that keeps each EXO on its node's
address (`standin/`) and the node entry point (`node`); its figures: `python -m scripts.measure_real_exo`.
See sandbox/README.md."""

# Contributor recipes; each wraps the same scripts the README uses.

default:
    @just --list

# run the whole test suite (extra args go to pytest)
test *ARGS:
    ./scripts/test {{ARGS}}

# ruff over the package, tests and scripts
lint:
    ./scripts/lint

# the fuzz targets with 10,000 examples each (the default suite runs a few hundred)
fuzz *ARGS:
    ./scripts/fuzz {{ARGS}}

# mypy --strict over the package
typecheck:
    ./scripts/typecheck

# a real call end to end on the mock carrier
demo:
    ./scripts/demo

# run the daemon in the foreground
serve *ARGS:
    .venv/bin/voicecall serve {{ARGS}}

# minutes of mixed load and abusive clients on a real daemon (--write records it)
soak *ARGS:
    ./scripts/soak {{ARGS}}

# measure the budgets and rewrite docs/benchmarks.md
bench *ARGS:
    ./scripts/bench {{ARGS}}

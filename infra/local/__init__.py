"""The local stack: `make serve` runs videohook on one machine with no AWS account or Docker.

serve.py starts it; environment.py configures the functions from template.yaml and the
user's environment; lambdas.py runs handlers as Lambda would; api.py is the local API
Gateway; triggers.py the SQS event source and the schedules; streams.py the table
stream's event source (the events function); logs.py tags the one log
stream; harness.py and demo.py start it from the outside (tests, `make demo`).
"""

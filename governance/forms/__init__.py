"""The policy UI's forms, one module per concept (as governance/views/). They only parse input:
the services validate the model and write it."""

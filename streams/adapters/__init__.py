"""Model adapters: one module per thing they talk to, one async interface (`base.ModelAdapter`)."""

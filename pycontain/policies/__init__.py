"""Built-in policies (package data): `default` (the ROME defaults) and `strict`."""

"""What is passed and stored: plans, run records, their schema, the options, the errors.

The lowest layer: it imports nothing else of the package.
"""

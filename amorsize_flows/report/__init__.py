"""A plan and its run record as a person reads them: text tables for logs and the terminal,
markdown for the orchestrators' UIs. Imports ``data`` only."""

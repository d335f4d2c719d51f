"""Errors a user can act on: the message names the file, row, column or setting."""


class GrokBatchError(Exception):
    """Base for every error grok-batch reports to a user without a traceback."""


class JobSpecError(GrokBatchError):
    """The job (file or flags) is invalid."""


class InputError(GrokBatchError):
    """The input table cannot be used as given."""


class ProviderError(GrokBatchError):
    """The batch service refused or failed a call in a way retries did not fix."""

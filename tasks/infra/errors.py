"""Errors a user can act on: the message names the file, row, column or setting."""


class GrokBatchError(Exception):
    """Base for every error grok-batch reports to a user without a traceback."""


class JobSpecError(GrokBatchError):
    """The job (file or flags) is invalid."""


class InputError(GrokBatchError):
    """The input table cannot be used as given."""


class StorageError(InputError):
    """A storage location (a path or a bucket URL) cannot be read or written; the message
    names its URL and what failed, never a credential."""


class ProviderError(GrokBatchError):
    """The batch service refused or failed a call in a way retries did not fix."""


class PassFailedError(GrokBatchError):
    """A background pass (inbox scan, collector) did its work but some of it failed: the
    pass's flow run ends Failed so alerts fire; `outcome` says what happened to each item."""

    def __init__(self, message: str, outcome: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.outcome = outcome

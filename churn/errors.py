"""One error hierarchy for the whole platform, the way Feast keeps ``feast.errors``.

Every failure a user can act on derives from :class:`ChurnError`: the CLI prints it as one line
and exits with its ``exit_code``; the API maps the serving ones to a 4xx/503 with a message.
Standard library only, so the drift launcher and the isolated drift environment can import it.
"""

from __future__ import annotations


class ChurnError(Exception):
    """A failure the user can act on: printed as one clear line, exit code ``exit_code``."""

    exit_code = 1


class SettingsError(ChurnError, ValueError):
    """A ``CHURN_*`` setting has a value the platform cannot use (names the accepted forms)."""


# --- data --------------------------------------------------------------------------------------
class DataError(ChurnError):
    """Input data breaks a contract (schema, gates, missing partitions)."""


class IngestError(DataError):
    """A batch failed validation or could not be staged; nothing was published."""


class AggregationError(DataError):
    """Feature inputs are missing or the requested dates make no sense."""


class NotEnoughDataError(DataError):
    """The store cannot give enough fully labelled cutoffs to train and evaluate."""


class StorageError(ChurnError):
    """The data store refused a read or a write (permissions, missing bucket, bad URL)."""


# --- feature store -------------------------------------------------------------------------------
class FeatureStoreError(ChurnError):
    """Feast registry or online store misconfigured or unreachable."""


class OnlineStoreUnavailable(FeatureStoreError):
    """The online store did not answer in time; serving returns 503, never a stale guess."""


# --- models ----------------------------------------------------------------------------------------
class ModelLoadError(ChurnError):
    """A model version is missing, corrupt or was built for another feature service."""


class RegistryError(ChurnError):
    """The registry refused an operation (unknown version, nothing to roll back to...)."""


class PromotionRefused(RegistryError):
    """The candidate does not beat production on the shared test cutoff."""


class NoProductionModel(RegistryError, ModelLoadError):
    """Nothing has been promoted yet."""


# --- jobs --------------------------------------------------------------------------------------------
class JobError(ChurnError):
    """A batch job (materialize, score, drift, monitor, retrain, daily) could not complete."""

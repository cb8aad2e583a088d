"""The worker process's clients, kept between jobs: one bound directory connection and one Exchange Online client
(its token and HTTP connections reused). Every job takes them from here, so a worker holds one of each whatever
kinds of work it runs; a changed configuration (a test, the connections page) replaces them."""

import threading

from writeback.directory import DirectoryClient, DirectoryConfig
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient

_directory: DirectoryClient | None = None
_exchange: ExchangeOnlineClient | None = None
_lock = threading.Lock()


def directory_client() -> DirectoryClient:
    """The worker's directory client (writeback tasks, change requests applied to AD, wave reverts' copies)."""
    global _directory
    config = DirectoryConfig.from_settings()
    with _lock:
        if _directory is None or _directory.config != config:
            if _directory is not None:
                _directory.close()
            _directory = DirectoryClient(config)
        return _directory


def exchange_client() -> ExchangeOnlineClient:
    """The worker's Exchange Online client (change requests, drift repairs' reads of the cloud)."""
    global _exchange
    config = ExchangeConfig.from_settings()
    with _lock:
        if _exchange is None or _exchange.config != config:
            _exchange = ExchangeOnlineClient(config)
        return _exchange

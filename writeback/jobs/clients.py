"""The worker process's clients, kept between jobs: one bound directory connection and one Exchange Online client
(its token and HTTP connections reused). Every job takes them from here, so a worker holds one of each whatever
kinds of work it runs; a changed configuration (a test, the connections page) replaces them. A work horse forked from
a worker that used them opens connections of its own: two processes writing to one TLS connection would corrupt it
(the directory client checks this itself; the Exchange client's pool is emptied here)."""

import logging
import os
import threading

import ldap3

from writeback.directory import DirectoryClient, DirectoryConfig, DirectoryError, connect
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient

logger = logging.getLogger(__name__)

_directory: DirectoryClient | None = None
_exchange: ExchangeOnlineClient | None = None
_exchange_pid = 0
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
    global _exchange, _exchange_pid
    config = ExchangeConfig.from_settings()
    with _lock:
        if _exchange is None or _exchange.config != config:
            _exchange = ExchangeOnlineClient(config)
        elif _exchange_pid != os.getpid():
            # Forked from a process that used it: keep its token, drop the pooled connections (closing this process's
            # copies of their sockets sends nothing on them; the parent keeps its own), so this process opens its own.
            _exchange.session.close()
        _exchange_pid = os.getpid()
        return _exchange


def directory_schema_read() -> None:
    """Read the directory's schema once in this process (a worker, before it forks its work horses), so each horse's
    first connection binds without reading it again (writeback.directory.connection). A directory that cannot be
    reached now is left for the jobs to meet: they read the schema themselves."""
    config = DirectoryConfig.from_settings()
    if not config.url:
        return
    try:
        connect(config, get_info=ldap3.SCHEMA).unbind()
    except DirectoryError as error:
        logger.warning("Could not read the directory's schema at worker start (%s); each job reads it.", error)
    except Exception:  # noqa: BLE001 - a worker must start whatever the directory answers
        logger.exception("Reading the directory's schema at worker start failed; each job reads it.")

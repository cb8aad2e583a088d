"""The directory's schema is read once per server and process, after the bind: a later connection (a new work horse's
first job, a reconnect) binds without reading it again, and a worker reads it before it forks its horses. Measured
on the sandbox's slapd: 18 ms of CPU per connection that read it, 1 ms for one that did not."""

import os

import ldap3

from tests.writeback.test_directory import config_for
from writeback.directory import DirectoryClient, connect
from writeback.directory import connection as connection_module
from writeback.jobs import clients


def test_a_second_connection_to_the_same_server_binds_without_reading_the_schema_again(directory, monkeypatch):
    monkeypatch.setattr(connection_module, "_SCHEMA_READ", {})
    first = connect(config_for(directory), get_info=ldap3.SCHEMA)
    schema = first.server.schema
    assert schema is not None and "displayName" in schema.attribute_types
    first.unbind()
    second = connect(config_for(directory), get_info=ldap3.SCHEMA)
    assert second.server.schema is schema  # not read again (a Server of its own, the schema shared)
    assert second.bound and second.search(directory.base_dn, "(objectClass=user)", attributes=["displayName"])
    second.unbind()
    other = connect(config_for(directory, timeout=3.0), get_info=ldap3.SCHEMA)  # another setting, another entry
    assert other.server.schema is not schema and other.server.schema is not None
    other.unbind()


def test_a_probe_without_schema_never_reads_it(directory, monkeypatch):
    monkeypatch.setattr(connection_module, "_SCHEMA_READ", {})
    probe = connect(config_for(directory))
    assert probe.server.schema is None
    probe.unbind()
    assert connection_module._SCHEMA_READ == {}


def test_a_client_in_a_forked_process_uses_the_schema_its_parent_read(directory, monkeypatch, settings):
    monkeypatch.setattr(connection_module, "_SCHEMA_READ", {})
    settings.LDAP_URL, settings.LDAP_BIND_DN = directory.url, directory.bind_dn
    settings.LDAP_BASE_DN, settings.LDAP_PASSWORD_FILE = directory.base_dn, str(directory.password_file)
    clients.directory_schema_read()  # what a worker does before it forks
    ((_, schema),) = connection_module._SCHEMA_READ.values()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the work horse: its client's first connection must reuse the parent's schema
        try:
            with DirectoryClient(clients.DirectoryConfig.from_settings()) as client:
                found = client.search(directory.base_dn, "(objectClass=user)", ["displayName"])
                reused = client._open().server.schema is schema
            os.write(write, b"ok" if found and reused else b"no")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 2) == b"ok"


def test_a_worker_starts_whatever_the_directory_answers(monkeypatch, settings, caplog):
    monkeypatch.setattr(connection_module, "_SCHEMA_READ", {})
    settings.LDAP_URL = "ldap://127.0.0.1:9"  # nothing listens there
    settings.LDAP_PASSWORD_FILE, settings.LDAP_TIMEOUT_SECONDS = __file__, 1
    clients.directory_schema_read()
    assert "Could not read the directory's schema" in caplog.text and connection_module._SCHEMA_READ == {}
    settings.LDAP_URL = ""
    clients.directory_schema_read()  # no directory configured: nothing to read, nothing logged twice

"""The worker's storage policy (issue 14, item 1): protocols and roots come from the
worker's settings; anything else is refused naming the field, the value and the setting."""

from __future__ import annotations

import os

import pytest

from nlsq_tasks.io import StoragePolicy, StoragePolicyError, check_glob, check_uri


def _policy(tmp_path, **env):
    return StoragePolicy.from_env({"NLSQ_STORAGE_ROOTS": str(tmp_path), **env})


def test_defaults_are_the_working_directory_storage_root_memory_and_s3(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = StoragePolicy.from_env({"NLSQ_STORAGE_ROOT": "/srv/nlsq"})
    assert p.protocols == ("file", "memory", "s3")
    assert p.check("data.npz", "data", "data.uri") == "data.npz"
    assert p.check(str(tmp_path / "sub" / "x.csv"), "data", "data.uri")
    assert p.check("/srv/nlsq/runs", "results", "storage_uri")
    assert p.check("memory://anything/x.npz", "data", "data.uri")
    assert p.check("s3://any-bucket/k.npz", "data", "data.uri")
    with pytest.raises(StoragePolicyError, match="NLSQ_STORAGE_ROOTS \\(default: the working directory and NLSQ_STORAGE_ROOT\\)") as err:
        p.check("/etc/passwd", "data", "data.uri")
    assert (err.value.field, err.value.value, err.value.setting) == ("data.uri", "/etc/passwd", err.value.setting)
    assert "NLSQ_STORAGE_ROOTS" in err.value.setting


@pytest.mark.parametrize("uri", ["../outside.npz", "sub/../../outside.npz", "file:///etc/shadow", "~/.ssh/id_rsa"])
def test_paths_escaping_the_roots_are_refused(tmp_path, monkeypatch, uri):
    (tmp_path / "root").mkdir()
    monkeypatch.chdir(tmp_path / "root")
    with pytest.raises(StoragePolicyError, match="outside the allowed storage roots"):
        StoragePolicy.from_env({}).check(uri, "data", "data.uri")


def test_a_symlink_out_of_a_root_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    os.symlink("/etc", tmp_path / "root" / "etc")
    with pytest.raises(StoragePolicyError, match="outside the allowed storage roots"):
        _policy(tmp_path / "root").check(str(tmp_path / "root" / "etc" / "hosts"), "data", "data.uri")


def test_http_is_refused_by_default_and_read_only_when_allowed(tmp_path):
    with pytest.raises(StoragePolicyError, match="protocol 'http' is not allowed.*NLSQ_STORAGE_PROTOCOLS") as err:
        _policy(tmp_path).check("http://127.0.0.1:9/x.csv", "data", "data.uri")
    assert err.value.setting == "NLSQ_STORAGE_PROTOCOLS"
    p = _policy(tmp_path, NLSQ_STORAGE_PROTOCOLS="file,s3,https,http")
    assert p.check("https://example.org/x.csv", "data", "data.uri")
    assert p.check("http://example.org/p.yaml", "preset", "preset")
    with pytest.raises(StoragePolicyError, match="'http' storage is read-only"):
        p.check("http://example.org/upload", "results", "storage_uri")


def test_remote_roots_restrict_a_protocol_to_prefixes(tmp_path):
    p = StoragePolicy.from_env({"NLSQ_STORAGE_ROOTS": f"{tmp_path},s3://lab/nlsq"})
    assert p.check("s3://lab/nlsq/run1/d.npz", "data", "data.uri")
    for bad in ("s3://lab/other/d.npz", "s3://lab/nlsq-evil/d.npz", "s3://lab/nlsq/../secret/d.npz"):
        with pytest.raises(StoragePolicyError, match="outside the allowed s3 roots"):
            p.check(bad, "data", "data.uri")
    assert p.check("memory://x/y", "results", "storage_uri")  # memory has no prefix listed: anywhere


@pytest.mark.parametrize("uri", ["s3://AKIAXXXX:s3cr3t@bucket/d.npz", "http://user:pw@host/x.csv", "s3://token@bucket/x"])
def test_credentials_in_uris_are_refused_and_never_repeated(tmp_path, uri):
    with pytest.raises(StoragePolicyError, match="credentials in a URI are refused") as err:
        _policy(tmp_path, NLSQ_STORAGE_PROTOCOLS="file,s3,http").check(uri, "data", "data.uri")
    assert "s3cr3t" not in str(err.value) and "pw@" not in str(err.value) and "token@" not in str(err.value)
    assert "***@" in str(err.value)


def test_globs_are_checked_before_anything_is_listed(tmp_path):
    p = _policy(tmp_path)
    assert check_glob(f"{tmp_path}/runs/*.npz", policy=p)
    with pytest.raises(StoragePolicyError, match="data.glob='/etc/\\*'"):
        check_glob("/etc/*", policy=p)
    with pytest.raises(StoragePolicyError, match="outside"):
        check_glob(f"{tmp_path}/../*", policy=p)


def test_check_uri_reads_the_settings_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("NLSQ_STORAGE_ROOTS", str(tmp_path))
    assert check_uri(str(tmp_path / "a.npz"), "data", "data.uri")
    monkeypatch.setenv("NLSQ_STORAGE_ROOTS", str(tmp_path / "elsewhere"))
    with pytest.raises(StoragePolicyError, match="NLSQ_STORAGE_ROOTS"):
        check_uri(str(tmp_path / "a.npz"), "data", "data.uri")

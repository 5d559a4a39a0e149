"""A local Hugging Face Hub for tests: the HTTP subset that ``huggingface_hub`` 2.4 and ``datasets`` 5.2 use.

Start it with :func:`start_hub_server` (or the ``hub_server`` fixture in ``conftest_hub.py``, which also points
both libraries at it). It binds ``127.0.0.1`` on a free port and serves, for model, dataset and space repos:

* repos: ``POST /api/repos/create`` (409 + ``url`` when it exists), ``DELETE /api/repos/delete``,
  ``GET /api/{type}s/{repo}[/revision/{rev}]`` (``sha``, ``siblings``, ``private``, ``gated``, ``cardData``;
  ``?blobs=true`` adds sizes and LFS info; ``?expand=`` filters), ``PUT .../settings`` (gated, visibility),
  ``GET /api/whoami-v2``, ``POST /api/validate-yaml``;
* commits: ``POST .../preupload/{rev}`` (regular vs LFS from the repo's ``.gitattributes``, size > 10 MB or
  binary sample; ``oid`` of the current file so the client skips unchanged files; ``shouldIgnore`` from
  ``gitIgnore``), the git-LFS batch API ``POST /{prefix}{repo}.git/info/lfs/objects/batch`` (basic transfer:
  an ``upload`` action to ``PUT /_lfs-upload/<ticket>`` on this server, then ``verify``; objects the repo
  already holds get no action, so they are not uploaded again) and ``POST .../commit/{branch}`` (NDJSON:
  ``file``, ``lfsFile``, ``deletedFile``, ``deletedFolder``; copies arrive as ``lfsFile``/``file``);
  a ``parentCommit`` that is not the branch head is rejected with HTTP 412, as the Hub does;
* refs: ``GET .../refs``, ``POST/DELETE .../tag/{rev}``, ``POST/DELETE .../branch/{name}``,
  ``GET .../commits/{rev}`` (paginated);
* reading: ``GET .../tree/{rev}[/{path}]`` (``recursive``, ``expand`` with ``lastCommit``, LFS ``oid`` =
  sha256; paginated with a ``Link: rel="next"`` header), ``POST .../paths-info/{rev}``, and
  ``GET``/``HEAD /{prefix}{repo}/resolve/{rev}/{path}`` with ``ETag``, ``X-Repo-Commit``, ``X-Linked-Etag``,
  ``X-Linked-Size``, ``Content-Length`` and ``Range``. Revisions are branch names, tag names or commit shas
  (URL-encoded). Every commit is a full tree snapshot; blobs are stored by sha256 under ``storage_dir``.

Xet, as the real Hub speaks it to ``huggingface_hub`` 2.4 + ``hf_xet`` 1.8 (on unless ``xet=False``):

* ``GET /api/{type}s/{repo}/xet-write-token/{rev}`` (write access) and ``.../xet-read-token/{rev}`` (read access)
  answer JSON ``{"accessToken", "exp", "casUrl"}`` (what hf_xet's token refresh reads) and the same in the
  headers ``X-Xet-Cas-Url``, ``X-Xet-Access-Token``, ``X-Xet-Token-Expiration`` (what huggingface_hub reads).
  ``casUrl`` is ``local://<storage_dir>/cas``: hf_xet's own ``LocalClient`` then chunks, dedups, stores and
  reconstructs for real in that folder (``hub_model.XetCas``), and nothing of the data passes through HTTP here;
* on commit, an ``lfsFile`` whose sha256 is not an LFS object of the repo is looked up in the shards the client
  wrote to the CAS (their metadata extension carries each file's sha256) and becomes an LFS entry with its Xet
  file hash; tree and paths-info listings then carry ``xetHash`` next to ``lfs``;
* ``resolve`` of such a file answers, like the real Hub, ``302`` with ``X-Xet-Hash``,
  ``Link: <.../xet-read-token/{commit}>; rel="xet-auth"``, ``X-Linked-Size``, ``X-Linked-Etag`` and a
  ``Location`` on another host (``localhost`` instead of ``127.0.0.1``, playing the CAS bridge, so the client's
  ``HEAD`` does not follow it). A Xet client reconstructs the file from the CAS; an LFS-only client
  (``HF_HUB_DISABLE_XET=1``) follows the redirect to ``/_xet-bridge/<hash>?sig=...``, which serves the bytes
  (ranges too) reconstructed with hf_xet's download API from the same CAS;
* LFS-only clients keep working as before; the LFS batch API also skips objects the repo holds through Xet.
  With ``xet=False`` (or ``server.xet = False``) the token routes answer 404, as on a Hub without Xet.

Auth: any ``Authorization: Bearer <token>`` is accepted, unless the server was given ``token=``, in which case
other tokens get 401. Private repos answer 401 to anonymous requests, gated repos refuse anonymous downloads.
Request headers are never logged.

Failures of a real Hub, switched on per test: ``server.token_role = "read"`` (every write, the Xet write-token
route included, answers 403 and ``whoami`` reports ``role: read``), ``server.orgs`` (the user's organizations in
``whoami``) with ``server.restrict_namespaces = True`` (creating or writing to a repo outside the user's and
those namespaces answers 403 ``You don't have the rights to create a dataset under the namespace "x"``),
``server.max_commit_files = N`` (a commit adding more files answers 413). ``POST /api/validate-yaml`` checks the
card's front matter as the Hub does for the basic fields (``hub_model.card_metadata_errors``: license ids, size
categories, ``configs`` and their ``data_files``, ``dataset_info`` splits, string fields) and answers 400 with
``{"errors": [{"message": ...}]}`` in the Hub's wording (``server.validate_metadata = False``: YAML syntax only).
``PUT .../settings`` (``update_repo_settings``) changes ``private``/``gated`` (counted as ``settings_changed``);
``server.repo_settings(repo_id)`` reads them. Rate limits and other answers: ``fail_next(..., status=429,
headers={"Retry-After": "1"})``.

Test hooks: ``server.counters`` (a ``Counter``) counts requests per endpoint name (``"commit"``,
``"preupload"``, ``"lfs_batch"``, ``"lfs_upload"``, ``"resolve_get"``, ``"tree"``, ``"xet_write_token"``,
``"xet_read_token"``, ``"xet_bridge_get"``, ...), plus ``"commits_created"`` (commits that landed),
``"lfs_files_uploaded"`` (LFS objects received) and ``"xet_files_committed"`` (files committed from the Xet CAS).
``server.cas_usage()`` gives the bytes of xorbs and shards clients stored in the CAS (diff it around a push to
measure what the push sent).
``server.fail_next(method, path_regex, times=1, status=500, when="before")`` makes the next matching requests
fail; ``when="after"`` applies the request first and then answers the error (a commit that landed although the
client saw a 500). ``server.head(repo_id)``, ``server.files(repo_id, rev)`` and ``server.read(repo_id, path)``
read the state directly; ``server.crashes`` holds tracebacks of bugs in this server (answered with 500).

How ``huggingface_hub`` 2.4 reacts to 5xx/429 (read from its source and checked by ``test_hub_server.py``):
``create_commit``'s final ``POST .../commit/{branch}`` is sent once, without retry (``_send_commit`` uses a
plain ``get_session().post``), so a 500 there surfaces immediately as ``HfHubHTTPError`` (and the caller
cannot tell whether it landed: see ``fail_next(..., when="after")``). The preupload, LFS batch, LFS upload
``PUT`` and verify calls, the tree and commit-list pagination and ``HfFileSystem`` range reads go through
``http_backoff`` (408/429/500/502/503/504 and network errors, up to 5 retries waiting 1, 2, 4, 8, 8 s).
``hf_hub_download`` falls back to its cache when the ``HEAD`` fails with 5xx and otherwise repeats it with
backoff; its ``GET`` is retried only on 408/429 (and resumed after connection errors).
``create_repo``, ``repo_info``, ``list_repo_refs``, ``create_tag``, ``update_repo_settings`` and
``get_paths_info`` are not retried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

from hub_model import (
    DEFAULT_USER,
    LFS_SIZE_THRESHOLD,
    Commit,
    Entry,
    HubState,
    Repo,
    card_metadata_errors,
    front_matter,
    iter_body,
    matches_gitattributes,
)

XET_TOKEN_TTL = 3600  # seconds a Xet access token is valid

TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_API = r"^/api/(?P<type>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
_GIT = r"^/(?:(?P<type>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+?)\.git/info/lfs/objects"
_WEB = r"^/(?:(?P<type>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)"
_REV = r"(?P<rev>[^/]+)"

# (methods, path regex, endpoint name, handler method name)
ROUTES = [
    ("GET", r"^/api/whoami-v2$", "whoami", "whoami"),
    ("POST", r"^/api/repos/create$", "create_repo", "create_repo"),
    ("DELETE", r"^/api/repos/delete$", "delete_repo", "delete_repo"),
    ("POST", r"^/api/validate-yaml$", "validate_yaml", "validate_yaml"),
    ("GET", _API + r"(?:/revision/" + _REV + r")?$", "repo_info", "repo_info"),
    ("PUT", _API + r"/settings$", "settings", "settings"),
    ("GET", _API + r"/refs$", "refs", "refs"),
    ("GET", _API + r"/tree/" + _REV + r"(?:/(?P<path>.*))?$", "tree", "tree"),
    ("POST", _API + r"/paths-info/" + _REV + r"$", "paths_info", "paths_info"),
    ("GET", _API + r"/commits/" + _REV + r"$", "commits", "commits"),
    ("POST", _API + r"/preupload/" + _REV + r"$", "preupload", "preupload"),
    ("POST", _API + r"/commit/" + _REV + r"$", "commit", "commit"),
    ("POST", _API + r"/tag/" + _REV + r"$", "tag_create", "tag_create"),
    ("DELETE", _API + r"/tag/" + _REV + r"$", "tag_delete", "tag_delete"),
    ("POST", _API + r"/branch/" + _REV + r"$", "branch_create", "branch_create"),
    ("DELETE", _API + r"/branch/" + _REV + r"$", "branch_delete", "branch_delete"),
    ("POST", _GIT + r"/batch$", "lfs_batch", "lfs_batch"),
    ("POST", _GIT + r"/verify$", "lfs_verify", "lfs_verify"),
    ("PUT", r"^/_lfs-upload/(?P<ticket>[0-9a-f]+)$", "lfs_upload", "lfs_upload"),
    ("GET", _API + r"/xet-write-token/" + _REV + r"$", "xet_write_token", "xet_write_token"),
    ("GET", _API + r"/xet-read-token/" + _REV + r"$", "xet_read_token", "xet_read_token"),
    ("GET", r"^/_xet-bridge/(?P<xet_hash>[0-9a-f]{64})$", "xet_bridge_get", "xet_bridge"),
    ("HEAD", r"^/_xet-bridge/(?P<xet_hash>[0-9a-f]{64})$", "xet_bridge_head", "xet_bridge"),
    ("GET", _WEB + r"/resolve/" + _REV + r"/(?P<path>.+)$", "resolve_get", "resolve"),
    ("HEAD", _WEB + r"/resolve/" + _REV + r"/(?P<path>.+)$", "resolve_head", "resolve"),
]
_COMPILED = [(method, re.compile(rx), name, fn) for method, rx, name, fn in ROUTES]
_NO_AUTH = ("lfs_upload", "xet_bridge_get", "xet_bridge_head")  # signed or ticketed URLs, like the real ones


class HubError(Exception):
    """An error answer: JSON ``{"error": message}`` plus the ``X-Error-*`` headers the client parses."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern
    remaining: int
    status: int
    when: str
    message: str
    headers: dict


@dataclass
class _Reply:
    status: int = 200
    body: bytes = b""
    headers: dict | None = None
    file: Path | None = None  # stream this blob instead of ``body``
    file_range: tuple[int, int] | None = None  # inclusive byte range of ``file``


def _json(data, status: int = 200, headers: dict | None = None, content_type: str = "application/json") -> _Reply:
    return _Reply(status, json.dumps(data).encode(), {"Content-Type": content_type, **(headers or {})})


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections are closed after a minute
    server: _HTTPServer

    # --- plumbing --------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - never log (headers may hold tokens)
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    @property
    def state(self) -> HubState:
        return self.server.hub.state

    def _dispatch(self, method: str) -> None:
        self._body: bytes | None = None
        self._body_consumed = False
        split = urlsplit(self.path)
        self.raw_path = split.path
        self.query = parse_qs(split.query, keep_blank_values=True)
        name, fn, params = "unknown", None, {}
        for route_method, rx, route_name, route_fn in _COMPILED:
            m = rx.match(self.raw_path)
            if m and route_method == method:
                name, fn, params = route_name, route_fn, m.groupdict()
                break
        self.hub._count(name)
        fault = self.hub._take_fault(method, self.raw_path)
        try:
            if fault is not None and fault.when == "before":
                raise HubError(fault.status, fault.message, headers=fault.headers)
            if fn is None:
                raise HubError(404, f"Not found: {method} {self.raw_path} (not implemented by the local test Hub)")
            self._authenticate(exempt=(name in _NO_AUTH))
            reply = getattr(self, fn)(**params)
            if fault is not None:  # when == "after": the request took effect, the client sees an error
                raise HubError(fault.status, fault.message, headers=fault.headers)
        except HubError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            reply = _json({"error": err.message}, err.status, headers)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception as exc:  # a bug in this server: say so instead of hanging the client
            self.hub.crashes.append(traceback.format_exc())
            reply = _json({"error": f"local test Hub crashed: {type(exc).__name__}: {exc}"}, 500)
        try:
            self._drain()
            self._send(reply, head=(method == "HEAD"))
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _send(self, reply: _Reply, head: bool) -> None:
        self.send_response(reply.status)
        length = len(reply.body)
        if reply.file is not None:
            start, end = reply.file_range or (0, reply.file.stat().st_size - 1)
            length = max(0, end - start + 1)
        for key, value in (reply.headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if head:
            return
        if reply.file is None:
            self.wfile.write(reply.body)
            return
        with open(reply.file, "rb") as fh:
            fh.seek(start)
            remaining = length
            while remaining:
                block = fh.read(min(1 << 20, remaining))
                if not block:
                    break
                self.wfile.write(block)
                remaining -= len(block)

    def _chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def body(self) -> bytes:
        if self._body is None:
            length = int(self.headers.get("Content-Length") or 0)
            self._body = b"".join(iter_body(self.rfile, length, self._chunked()))
            self._body_consumed = True
        return self._body

    def json_body(self) -> dict:
        try:
            return json.loads(self.body() or b"{}")
        except json.JSONDecodeError as exc:
            raise HubError(400, f"Invalid JSON body: {exc}") from None

    def _drain(self) -> None:
        if not self._body_consumed:
            self.body()

    def _authenticate(self, exempt: bool) -> None:
        auth = self.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        self.authenticated = bool(token)
        if exempt or token is None:
            return
        if self.hub.token is not None and not secrets.compare_digest(token, self.hub.token):
            raise HubError(401, "Invalid credentials in Authorization header")

    # --- helpers -----------------------------------------------------------------
    def _repo(self, type: str | None, ns: str, name: str, *, write: bool = False, download: bool = False) -> Repo:
        repo_type = TYPES.get(type or "models", "model")
        repo = self.state.get(repo_type, f"{unquote(ns)}/{unquote(name)}")
        if repo is None or (repo.private and not self.authenticated):
            raise HubError(404 if self.authenticated else 401, "Repository not found", "RepoNotFound")
        if write and not self.authenticated:
            raise HubError(401, "You must be authenticated to write to a repository", "RepoNotFound")
        if write:
            self._check_write(repo.repo_id, f"write to {repo.repo_id}")
        if download and repo.gated and not self.authenticated:
            raise HubError(401, "Access to this gated repository is restricted.", "GatedRepo")
        return repo

    def _check_write(self, repo_id: str, doing: str) -> None:
        """A read-only token (``hub.token_role = "read"``), or a namespace the user is not in when
        ``hub.restrict_namespaces`` is set, gets 403, as on the Hub."""
        if self.hub.token_role == "read":
            raise HubError(403, f"You don't have the rights to {doing}: this is a read access token")
        namespace = repo_id.split("/")[0]
        if self.hub.restrict_namespaces and namespace not in {self.hub.user, *self.hub.orgs}:
            raise HubError(403, f"You don't have the rights to {doing}")

    def _commit(self, repo: Repo, rev: str | None) -> Commit:
        revision = unquote(rev) if rev else "main"
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.hub.endpoint}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _file_info(self, repo: Repo, commit: Commit, path: str, entry: Entry, expand: bool) -> dict:
        info = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
        if entry.lfs:
            info["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        if entry.xet_hash is not None:
            info["xetHash"] = entry.xet_hash
        if expand:
            info["lastCommit"] = self._last_commit(repo, commit, path, False)
        return info

    def _dir_info(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        info = {"type": "directory", "oid": Repo.folder_oid(commit.tree, path), "size": 0, "path": path}
        if expand:
            info["lastCommit"] = self._last_commit(repo, commit, path, True)
        return info

    @staticmethod
    def _last_commit(repo: Repo, commit: Commit, path: str, is_dir: bool) -> dict:
        last = repo.last_commit_touching(commit, path, is_dir)
        return {"id": last.oid, "title": last.title, "date": last.date}

    def _paginate(self, items: list) -> _Reply:
        cursor = int((self.query.get("cursor") or ["0"])[0])
        size = self.hub.page_size
        headers = {}
        if cursor + size < len(items):
            query = {k: v for k, v in self.query.items() if k != "cursor"}
            query["cursor"] = [str(cursor + size)]
            headers["Link"] = f'<{self.hub.endpoint}{self.raw_path}?{urlencode(query, doseq=True)}>; rel="next"'
        return _json(items[cursor : cursor + size], headers=headers)

    # --- account, repos ----------------------------------------------------------------
    def whoami(self) -> _Reply:
        if not self.authenticated:
            raise HubError(401, "Invalid credentials in Authorization header")
        return _json({"type": "user", "name": self.hub.user, "fullname": self.hub.user,
                      "orgs": [{"type": "org", "name": org, "roleInOrg": "write"} for org in self.hub.orgs],
                      "auth": {"type": "access_token",
                               "accessToken": {"displayName": "local", "role": self.hub.token_role}}})

    def create_repo(self) -> _Reply:
        if not self.authenticated:
            raise HubError(401, "You must be authenticated to create a repository")
        body = self.json_body()
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        repo_id = f"{body.get('organization') or self.hub.user}/{body['name']}"
        private = body.get("visibility", "private" if body.get("private") else "public") == "private"
        namespace = repo_id.split("/")[0]
        self._check_write(repo_id, f'create a {repo_type} under the namespace "{namespace}"')
        with self.state.lock:
            repo = self.state.get(repo_type, repo_id)
            if repo is not None:
                return _json({"error": f"You already created this {repo_type} repo", "url": self._repo_url(repo)}, 409)
            repo = self.state.create(repo_type, repo_id, private)
        return _json({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def delete_repo(self) -> _Reply:
        body = self.json_body()
        repo_type = body.get("type") or "model"
        ns = body.get("organization") or self.hub.user
        self._repo(next(k for k, v in TYPES.items() if v == repo_type), ns, body["name"], write=True)
        with self.state.lock:
            self.state.repos.pop((repo_type, f"{ns}/{body['name']}"), None)
        return _json({})

    def validate_yaml(self) -> _Reply:
        content = self.json_body().get("content", "")
        try:
            data = front_matter(content)
        except yaml.YAMLError as exc:
            return _json({"errors": [{"message": f"Invalid YAML: {exc}"}], "warnings": []}, 400)
        errors = card_metadata_errors(data) if self.hub.validate_metadata else []
        if errors:  # as the Hub: 400, one {"message"} per problem (huggingface_hub lists them in a ValueError)
            return _json({"errors": [{"message": m} for m in errors], "warnings": []}, 400)
        return _json({"errors": [], "warnings": []})

    def repo_info(self, type, ns, name, rev=None) -> _Reply:
        repo = self._repo(type, ns, name)
        with self.state.lock:
            commit = self._commit(repo, rev)
            blobs = _truthy((self.query.get("blobs") or [None])[0])
            siblings = []
            for path, entry in sorted(commit.tree.items()):
                sibling: dict = {"rfilename": path}
                if blobs:
                    sibling.update(size=entry.size, blobId=entry.oid)
                    if entry.lfs:
                        sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
                siblings.append(sibling)
            info = {
                "_id": repo.history(commit)[-1].oid[:24], "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0], "sha": commit.oid, "lastModified": commit.date,
                "createdAt": repo.created_at, "private": repo.private, "gated": repo.gated, "disabled": False,
                "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                "cardData": repo.card_data(commit, self.state.blobs),
                "usedStorage": sum(e.size for e in commit.tree.values()),
            }
        expand = self.query.get("expand") or self.query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return _json(info)

    def settings(self, type, ns, name) -> _Reply:
        repo = self._repo(type, ns, name, write=True)
        body = self.json_body()
        with self.state.lock:
            if "gated" in body:
                if body["gated"] not in ("auto", "manual", False):
                    raise HubError(400, f"Invalid gated value {body['gated']!r}")
                repo.gated = body["gated"]
            if "visibility" in body:
                repo.private = body["visibility"] == "private"
            if "private" in body:
                repo.private = bool(body["private"])
            self.hub._count("settings_changed")
        return _json({})

    # --- refs and history -----------------------------------------------------------
    def refs(self, type, ns, name) -> _Reply:
        repo = self._repo(type, ns, name)
        with self.state.lock:
            return _json({
                "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in sorted(repo.branches.items())],
                "converts": [],
                "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in sorted(repo.tags.items())],
                "pullRequests": [],
            })

    def commits(self, type, ns, name, rev) -> _Reply:
        repo = self._repo(type, ns, name)
        with self.state.lock:
            items = [
                {"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
                 "authors": [{"user": c.author, "avatar": None}]}
                for c in repo.history(self._commit(repo, rev))
            ]
        return self._paginate(items)

    def tag_create(self, type, ns, name, rev) -> _Reply:
        repo = self._repo(type, ns, name, write=True)
        tag = self.json_body().get("tag")
        if not tag:
            raise HubError(400, "Missing tag name")
        with self.state.lock:
            commit = self._commit(repo, rev)
            if tag in repo.tags or tag in repo.branches:
                raise HubError(409, f"Reference already exists: refs/tags/{tag}")
            repo.tags[tag] = commit.oid
        return _json({})

    def tag_delete(self, type, ns, name, rev) -> _Reply:
        repo = self._repo(type, ns, name, write=True)
        with self.state.lock:
            if repo.tags.pop(unquote(rev), None) is None:
                raise HubError(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
        return _json({})

    def branch_create(self, type, ns, name, rev) -> _Reply:
        repo = self._repo(type, ns, name, write=True)
        branch = unquote(rev)
        with self.state.lock:
            start = self._commit(repo, self.json_body().get("startingPoint") or "main")
            if branch in repo.branches or branch in repo.tags:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = start.oid
        return _json({})

    def branch_delete(self, type, ns, name, rev) -> _Reply:
        repo = self._repo(type, ns, name, write=True)
        branch = unquote(rev)
        with self.state.lock:
            if branch == "main":
                raise HubError(403, "Cannot delete the default branch")
            if repo.branches.pop(branch, None) is None:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        return _json({})

    # --- reading files -------------------------------------------------------------
    def tree(self, type, ns, name, rev, path=None) -> _Reply:
        repo = self._repo(type, ns, name)
        folder = unquote(path or "").strip("/")
        recursive = _truthy((self.query.get("recursive") or [None])[0])
        expand = _truthy((self.query.get("expand") or [None])[0])
        with self.state.lock:
            commit = self._commit(repo, rev)
            folders = Repo.folders(commit.tree)
            if folder and folder not in folders:
                raise HubError(404, f"Entry not found: {folder} is not a folder at {commit.oid}", "EntryNotFound",
                               {"X-Repo-Commit": commit.oid})
            prefix = folder + "/" if folder else ""

            def wanted(p: str) -> bool:
                return p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])

            items = [self._dir_info(repo, commit, d, expand) for d in sorted(folders) if wanted(d)]
            items += [self._file_info(repo, commit, p, e, expand) for p, e in sorted(commit.tree.items()) if wanted(p)]
        return self._paginate(items)

    def paths_info(self, type, ns, name, rev) -> _Reply:
        repo = self._repo(type, ns, name)
        if "json" in self.headers.get("Content-Type", ""):
            body = self.json_body()
            paths, expand = body.get("paths", []), bool(body.get("expand"))
        else:
            form = parse_qs(self.body().decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), _truthy((form.get("expand") or [None])[0])
        with self.state.lock:
            commit = self._commit(repo, rev)
            folders = Repo.folders(commit.tree)
            out = []
            for p in paths:
                p = p.strip("/")
                if p in commit.tree:
                    out.append(self._file_info(repo, commit, p, commit.tree[p], expand))
                elif p in folders:
                    out.append(self._dir_info(repo, commit, p, expand))
        return _json(out)

    def resolve(self, type, ns, name, rev, path) -> _Reply:
        repo = self._repo(type, ns, name, download=True)
        path = unquote(path)
        with self.state.lock:
            commit = self._commit(repo, rev)
            entry = commit.tree.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        etag = entry.sha256 if entry.lfs else entry.oid
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        if entry.xet_hash is not None and self.hub.xet:
            # As the real Hub: a redirect to the CAS bridge on another host, with what a Xet client needs.
            token_route = f"{self.hub.endpoint}/api/{type or 'models'}/{repo.repo_id}/xet-read-token/{commit.oid}"
            headers.update({"X-Xet-Hash": entry.xet_hash, "Link": f'<{token_route}>; rel="xet-auth"',
                            "Location": self.hub.bridge_url(entry.xet_hash)})
            return _Reply(302, headers=headers)
        return self._serve(self.state.blob_path(entry), entry.size, headers)

    def _serve(self, path: Path, size: int, headers: dict) -> _Reply:
        reply = _Reply(200, headers=headers, file=path)
        byte_range = self.headers.get("Range")
        if byte_range and self.command == "GET":
            reply.file_range = self._parse_range(byte_range, size)
            start, end = reply.file_range
            reply.status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return reply

    # --- Xet -----------------------------------------------------------------------------
    def xet_write_token(self, type, ns, name, rev) -> _Reply:
        return self._xet_token(self._repo(type, ns, name, write=True), rev, write=True)

    def xet_read_token(self, type, ns, name, rev) -> _Reply:
        return self._xet_token(self._repo(type, ns, name, download=True), rev, write=False)

    def _xet_token(self, repo: Repo, rev: str, write: bool) -> _Reply:
        if not self.hub.xet:
            raise HubError(404, f"Not found: GET {self.raw_path} (Xet is turned off on this local test Hub)")
        if not (write and unquote(rev) == "None"):  # a write token for a PR names no revision
            with self.state.lock:
                self._commit(repo, rev)
        cas_url = self.state.cas.url
        token = "xet_local_" + secrets.token_hex(16)
        exp = int(time.time()) + XET_TOKEN_TTL
        return _json({"accessToken": token, "exp": exp, "casUrl": cas_url},
                     headers={"X-Xet-Cas-Url": cas_url, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(exp)})

    def xet_bridge(self, xet_hash) -> _Reply:
        if not hmac.compare_digest((self.query.get("sig") or [""])[0], self.hub._sign(xet_hash)):
            raise HubError(403, "Invalid or expired signature")
        f = self.state.cas.by_hash(xet_hash)
        if f is None or f.sha256 is None:
            raise HubError(404, f"Xet file {xet_hash} not found")
        entry = Entry.lfs_file(f.sha256, f.size, xet_hash)
        headers = {"ETag": f'"{f.sha256}"', "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        return self._serve(self.state.blob_path(entry), f.size, headers)

    @staticmethod
    def _parse_range(value: str, size: int) -> tuple[int, int]:
        m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
        if not m or (not m.group(1) and not m.group(2)):
            raise HubError(416, f"Unsupported range {value!r}", headers={"Content-Range": f"bytes */{size}"})
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:
            start, end = max(0, size - int(m.group(2))), size - 1
        if start >= size or start > end:
            raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
        return start, end

    # --- writing ----------------------------------------------------------------------
    def preupload(self, type, ns, name, rev) -> _Reply:
        repo = self._repo(type, ns, name, write=True)
        body = self.json_body()
        ignore = [line.strip() for line in (body.get("gitIgnore") or "").splitlines()
                  if line.strip() and not line.startswith("#")]
        with self.state.lock:
            commit = self._commit(repo, rev)
            patterns = repo.lfs_patterns(commit.tree, self.state.blobs)
            files = []
            for f in body.get("files", []):
                sample = base64.b64decode(f.get("sample") or "")
                size = int(f.get("size", 0))
                lfs = size > 0 and (matches_gitattributes(f["path"], patterns) or size > LFS_SIZE_THRESHOLD
                                    or b"\x00" in sample)
                existing = commit.tree.get(f["path"])
                oid = None if existing is None else (existing.sha256 if existing.lfs else existing.oid)
                files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                              "shouldIgnore": matches_gitattributes(f["path"], ignore), "oid": oid})
        return _json({"files": files, "commitOid": commit.oid})

    def lfs_batch(self, type, ns, name) -> _Reply:
        repo = self._repo(type, ns, name, write=True)
        body = self.json_body()
        if body.get("operation") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is supported by the local test Hub")
        verify = f"{self.hub.endpoint}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}.git/info/lfs/objects/verify"
        objects = []
        with self.state.lock:
            for obj in body.get("objects", []):
                oid, size = obj["oid"], int(obj["size"])
                out = {"oid": oid, "size": size, "authenticated": True}
                held = oid in repo.lfs_objects and (self.state.blobs.exists(oid) or self.state.cas.by_sha256(oid))
                if not held:
                    ticket = secrets.token_hex(16)
                    self.hub._tickets[ticket] = (repo.repo_type, repo.repo_id, oid, size)
                    out["actions"] = {"upload": {"href": f"{self.hub.endpoint}/_lfs-upload/{ticket}", "header": {}},
                                      "verify": {"href": verify, "header": {}}}
                objects.append(out)
        return _json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                     content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, ticket) -> _Reply:
        found = self.hub._tickets.get(ticket)
        if found is None:
            raise HubError(404, "Unknown or expired upload URL")
        repo_type, repo_id, oid, size = found
        length = int(self.headers.get("Content-Length") or 0)
        sha256, received = self.state.blobs.put_stream(self.rfile, length, self._chunked())
        self._body_consumed = True
        if sha256 != oid or received != size:
            raise HubError(400, f"Uploaded content does not match: expected sha256 {oid} ({size} bytes), "
                                f"got {sha256} ({received} bytes)")
        with self.state.lock:
            repo = self.state.get(repo_type, repo_id)
            if repo is not None:
                repo.lfs_objects.add(oid)
            self.hub._count("lfs_files_uploaded")
        return _Reply(200, headers={"ETag": f'"{oid}"'})

    def lfs_verify(self, type, ns, name) -> _Reply:
        repo = self._repo(type, ns, name, write=True)
        oid = self.json_body().get("oid")
        with self.state.lock:
            if oid not in repo.lfs_objects:
                raise HubError(404, f"LFS object {oid} was not uploaded")
        return _json({"success": True})

    def commit(self, type, ns, name, rev) -> _Reply:
        repo = self._repo(type, ns, name, write=True)
        if _truthy((self.query.get("create_pr") or [None])[0]):
            raise HubError(400, "create_pr is not supported by the local test Hub")
        lines = [json.loads(line) for line in self.body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = lines[0]["value"]
        branch = unquote(rev)
        files = sum(1 for op in lines[1:] if op.get("key") in ("file", "lfsFile"))
        if self.hub.max_commit_files is not None and files > self.hub.max_commit_files:
            raise HubError(413, f"Payload Too Large: this commit adds {files} files, more than the "
                                f"{self.hub.max_commit_files} files one commit may hold")
        with self.state.lock:
            if branch not in repo.branches:
                if repo.resolve(branch) is not None:
                    raise HubError(400, f"Invalid rev id: {branch} is not a branch")
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.branches[branch]
            parent = header.get("parentCommit")
            if parent and not (len(parent) >= 7 and head.startswith(parent)):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(repo.commits[head].tree)
            for op in lines[1:]:
                self._apply(repo, tree, op["key"], op["value"])
            commit = repo.new_commit(branch, tree, header.get("summary") or "commit", header.get("description") or "")
            self.hub._count("commits_created")
        prefix = URL_PREFIX[repo.repo_type]
        return _json({"success": True, "commitOid": commit.oid, "hookOutput": "", "pullRequestUrl": None,
                      "commitUrl": f"{self.hub.endpoint}/{prefix}{repo.repo_id}/commit/{commit.oid}"})

    def _apply(self, repo: Repo, tree: dict[str, Entry], key: str, value: dict) -> None:
        path = value.get("path", "")
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise HubError(400, f"Invalid path in commit: {path!r}")
        if key == "file":
            raw = value.get("content", "")
            data = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
            self.state.blobs.put_bytes(data)
            tree[path] = Entry.regular(data)
        elif key == "lfsFile":
            oid = value["oid"]
            size = value.get("size")
            xet = self.state.cas.by_sha256(oid)  # uploaded through Xet: the client's shard names its sha256
            if oid in repo.lfs_objects and self.state.blobs.exists(oid):
                size = int(size) if size is not None else self.state.blobs.path(oid).stat().st_size
                tree[path] = Entry.lfs_file(oid, size, xet.xet_hash if xet else None)
            elif xet is not None:
                if size is not None and int(size) != xet.size:
                    raise HubError(400, f"Size of {path} ({size}) differs from its Xet file's ({xet.size})")
                tree[path] = Entry.lfs_file(oid, xet.size, xet.xet_hash)
                repo.lfs_objects.add(oid)  # the repo holds it now: an LFS client is not asked to upload it again
                self.hub._count("xet_files_committed")
            else:
                raise HubError(400, f"LFS object {oid} for {path} was never uploaded to this repository")
        elif key == "deletedFile":
            if tree.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            victims = [p for p in tree if p.startswith(prefix)]
            if not victims:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in victims:
                del tree[p]
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer


class HubServer:
    """A running local Hub. Use :func:`start_hub_server` to get one."""

    def __init__(self, storage_dir: str | Path | None = None, *, token: str | None = None,
                 user: str = DEFAULT_USER, page_size: int = 1000, xet: bool = True):
        self._own_dir = storage_dir is None
        self.storage_dir = Path(tempfile.mkdtemp(prefix="local-hub-")) if storage_dir is None else Path(storage_dir)
        self.state = HubState(self.storage_dir)
        self.token = token
        self.user = user
        self.page_size = page_size
        self.xet = xet  # False: the Xet token routes answer 404 and resolve sends no Xet headers
        # Switches for the failures a real Hub answers (see the module docstring):
        self.token_role = "write"  # "read": every write answers 403, whoami reports a read token
        self.orgs: list[str] = []  # organizations the user belongs to (whoami)
        self.restrict_namespaces = False  # True: writes outside the user's and orgs' namespaces answer 403
        self.max_commit_files: int | None = None  # a commit adding more files answers 413
        self.validate_metadata = True  # validate-yaml checks the card's basic fields (False: YAML syntax only)
        self._bridge_key = secrets.token_bytes(16)
        self.counters: Counter[str] = Counter()
        self.crashes: list[str] = []  # tracebacks of bugs in this server (answered with HTTP 500)
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._tickets: dict[str, tuple[str, str, str, int]] = {}
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        # The CAS bridge is this server under another host name: clients treat it as a CDN (no auth header,
        # not followed by the HEAD of hf_hub_download), as they treat the real Hub's cas-bridge host.
        self.bridge_endpoint = f"http://localhost:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="local-hub", daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._own_dir:
            shutil.rmtree(self.storage_dir, ignore_errors=True)

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- test hooks ---------------------------------------------------------------
    def fail_next(self, method: str, path_regex: str, times: int = 1, status: int = 500, *,
                  when: str = "before", message: str = "Internal Error (injected by the local test Hub)",
                  headers: dict | None = None) -> None:
        """Answer ``status`` to the next ``times`` requests whose method (``"*"`` for any) and raw URL path
        (``re.search``, no query string) match. ``when="after"``: process the request, then answer the error."""
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), times, status, when, message,
                                       dict(headers or {})))

    def reset_counters(self) -> None:
        with self._lock:
            self.counters.clear()

    def head(self, repo_id: str, branch: str = "main", repo_type: str = "dataset") -> str:
        """The commit sha at the head of ``branch``."""
        with self.state.lock:
            return self.state.repos[(repo_type, repo_id)].branches[branch]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, Entry]:
        """The tree at ``revision``: ``path -> Entry(size, sha256, lfs, oid)``."""
        with self.state.lock:
            commit = self.state.repos[(repo_type, repo_id)].resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return dict(commit.tree)

    def read(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "dataset") -> bytes:
        """The bytes of a file (reconstructed from the Xet CAS if it was uploaded through Xet)."""
        return self.state.blob_path(self.files(repo_id, revision, repo_type)[path]).read_bytes()

    def repo_settings(self, repo_id: str, repo_type: str = "dataset") -> dict:
        """``{"private": bool, "gated": False | "auto" | "manual"}`` of a repo, as its settings hold them."""
        with self.state.lock:
            repo = self.state.repos[(repo_type, repo_id)]
            return {"private": repo.private, "gated": repo.gated}

    def cas_usage(self) -> dict[str, int]:
        """Xorbs and shards the clients stored in the Xet CAS so far (``xorbs``, ``xorb_bytes``, ``shards``,
        ``shard_bytes``): byte for byte what hf_xet uploaded (shards without their footer)."""
        return self.state.cas.usage()

    def bridge_url(self, xet_hash: str) -> str:
        return f"{self.bridge_endpoint}/_xet-bridge/{xet_hash}?sig={self._sign(xet_hash)}"

    def _sign(self, xet_hash: str) -> str:
        return hmac.new(self._bridge_key, xet_hash.encode(), hashlib.sha256).hexdigest()[:32]

    # --- used by the handler ---------------------------------------------------------
    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.method in ("*", method) and fault.pattern.search(path):
                    fault.remaining -= 1
                    self.counters["injected_failures"] += 1
                    return fault
            return None


def start_hub_server(storage_dir: str | Path | None = None, *, token: str | None = None,
                     page_size: int = 1000, xet: bool = True) -> HubServer:
    """Start a local Hub on ``127.0.0.1`` (free port) in a background thread.

    Returns the :class:`HubServer` (``.endpoint``, ``.stop()``, ``.counters``, ``.fail_next(...)``).
    Blobs and the Xet CAS go to ``storage_dir`` (a temporary folder, removed on ``stop()``, if omitted).
    ``xet=False``: a Hub without Xet (its token routes answer 404).
    """
    return HubServer(storage_dir, token=token, page_size=page_size, xet=xet).start()

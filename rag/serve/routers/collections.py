"""Collections (stores under the root): create, list with counts, info, delete; their index versions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from indexes.errors import ConflictError
from rag.serve.deps import Services, allow, need, services
from rag.serve.keys import Principal
from rag.serve.schemas.rest import NewCollection

router = APIRouter(prefix="/collections", tags=["collections"])


@router.get("")
def list_collections(s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    return {"collections": [s.collections.info(n) for n in s.collections.names() if who.may_use(n)]}


@router.post("", status_code=201)
def create_collection(body: NewCollection, response: Response, s: Services = Depends(services),
                      who: Principal = Depends(need("admin"))) -> dict:
    allow(who, body.name)
    info = s.collections.create(body.name, body.embedder, body.index)
    response.headers["Location"] = f"/collections/{body.name}"
    return info


@router.get("/{name}")
def collection_info(name: str, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    return s.collections.info(allow(who, name))


@router.delete("/{name}", status_code=204)
def delete_collection(name: str, s: Services = Depends(services), who: Principal = Depends(need("admin"))) -> Response:
    allow(who, name)
    s.collections.path(name)
    if s.db.jobs(name, unfinished=True):
        raise ConflictError(
            f"collection {name!r} has jobs queued or running; wait for them (GET /collections/{name}/jobs)"
        )
    s.collections.delete(name)
    return Response(status_code=204)


@router.get("/{name}/versions")
def versions(name: str, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    from indexes.versions import list_versions

    root = s.collections.path(allow(who, name))
    return {
        "versions": [
            {
                "version": v.name,
                "embedder": v.embedder,
                "dim": v.dim,
                "active": v.active,
                "complete": v.complete,
                "note": v.note,
            }
            for v in list_versions(root)
        ]
    }


@router.post("/{name}/versions/{version}/activate")
def activate(name: str, version: str, s: Services = Depends(services), who: Principal = Depends(need("admin"))) -> dict:
    from indexes.errors import NotFoundError
    from indexes.versions import activate as switch
    from indexes.versions import list_versions

    root = s.collections.path(allow(who, name))
    if version not in {v.name for v in list_versions(root)}:
        raise NotFoundError(
            f"collection {name!r} has no version {version!r}: GET /collections/{name}/versions lists them"
        )
    switch(root, version)
    s.collections.forget(name)
    return {"active": version}

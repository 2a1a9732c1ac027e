from __future__ import annotations

from fastapi import APIRouter, Response

from mall.addresses import service
from mall.addresses.schemas import AddressIn, AddressOut
from mall.deps import CurrentMember
from mall.kit.bounds import Id

router = APIRouter(prefix="/api/v1", tags=["addresses"])


@router.get("/addresses", response_model=list[AddressOut])
async def list_addresses(member: CurrentMember) -> list[AddressOut]:
    """The member's delivery addresses, the default first."""
    return [AddressOut.model_validate(a) for a in await service.list_addresses(member.id)]


@router.post("/addresses", response_model=AddressOut, status_code=201)
async def create_address(body: AddressIn, member: CurrentMember) -> AddressOut:
    """Add an address; the first one (or one sent with `is_default`) becomes the default."""
    return AddressOut.model_validate(await service.create_address(member.id, body))


@router.get("/addresses/{address_id}", response_model=AddressOut)
async def get_address(address_id: Id, member: CurrentMember) -> AddressOut:
    return AddressOut.model_validate(await service.get_address(member.id, address_id))


@router.put("/addresses/{address_id}", response_model=AddressOut)
async def update_address(address_id: Id, body: AddressIn, member: CurrentMember) -> AddressOut:
    return AddressOut.model_validate(await service.update_address(member.id, address_id, body))


@router.delete("/addresses/{address_id}", status_code=204)
async def delete_address(address_id: Id, member: CurrentMember) -> Response:
    """Delete an address; past redemptions and orders keep their own copy."""
    await service.delete_address(member.id, address_id)
    return Response(status_code=204)

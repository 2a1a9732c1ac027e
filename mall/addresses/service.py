"""Delivery addresses: at most one default per member; the first one is the default."""

from __future__ import annotations

from tortoise.functions import Count
from tortoise.transactions import in_transaction

from mall.addresses.models import Address
from mall.addresses.schemas import AddressIn, AddressSnapshot
from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit.text import address_key

MAX_ADDRESSES = 20

ADDRESS_NOT_FOUND = ErrorCode("ADDRESS_NOT_FOUND", 404, _("The delivery address was not found"))
ADDRESS_LIMIT_REACHED = ErrorCode(
    "ADDRESS_LIMIT_REACHED", 409, _("You can keep at most {limit} delivery addresses")
)


async def list_addresses(member_id: int) -> list[Address]:
    return await Address.filter(member_id=member_id).order_by("-is_default", "-id")


async def get_address(member_id: int, address_id: int) -> Address:
    address = await Address.get_or_none(id=address_id, member_id=member_id)
    if address is None:
        raise ADDRESS_NOT_FOUND()
    return address


async def snapshot(member_id: int, address_id: int) -> AddressSnapshot:
    """The address as an order or redemption should keep it."""
    address = await get_address(member_id, address_id)
    return AddressSnapshot(
        name=address.name, phone=address.phone, region=address.region, detail=address.detail
    )


async def create_address(member_id: int, data: AddressIn) -> Address:
    async with in_transaction():
        count = await Address.filter(member_id=member_id).count()
        if count >= MAX_ADDRESSES:
            raise ADDRESS_LIMIT_REACHED(limit=MAX_ADDRESSES)
        make_default = data.is_default or count == 0
        if make_default:
            await Address.filter(member_id=member_id, is_default=True).update(is_default=False)
        return await Address.create(
            member_id=member_id,
            name=data.name,
            phone=data.phone,
            region=data.region,
            detail=data.detail,
            is_default=make_default,
            match_key=address_key(data.region, data.detail),
        )


async def update_address(member_id: int, address_id: int, data: AddressIn) -> Address:
    async with in_transaction():
        address = await get_address(member_id, address_id)
        if data.is_default and not address.is_default:
            await Address.filter(member_id=member_id, is_default=True).update(is_default=False)
            address.is_default = True
        # unsetting the only default is ignored: a member with addresses always has one
        address.name = data.name
        address.phone = data.phone
        address.region = data.region
        address.detail = data.detail
        address.match_key = address_key(data.region, data.detail)
        await address.save()
        return address


async def delete_address(member_id: int, address_id: int) -> None:
    async with in_transaction():
        address = await get_address(member_id, address_id)
        await address.delete()
        if address.is_default:
            newest = await Address.filter(member_id=member_id).order_by("-id").first()
            if newest is not None:
                await Address.filter(id=newest.id).update(is_default=True)


async def shared_addresses(min_members: int, limit: int) -> list[tuple[str, list[int]]]:
    """Normalized addresses used by at least `min_members` members, most members first:
    (one of the addresses as typed, its member ids). Addresses saved before the key
    existed have none (the 0006 migration fills them)."""
    rows = (
        await Address.filter(match_key__not="")
        .annotate(n=Count("member_id", distinct=True))
        .group_by("match_key")
        .filter(n__gte=min_members)
        .order_by("-n", "match_key")
        .limit(limit)
        .values_list("match_key", "n")
    )
    found: list[tuple[str, list[int]]] = []
    for match_key, _n in rows:
        addresses = await Address.filter(match_key=match_key).order_by("id").limit(200)
        members = sorted({a.member_id for a in addresses})
        sample = addresses[0]
        found.append((f"{sample.region} {sample.detail}", members))
    return found

"""Demo catalog: a few categories and products with SKUs and pictures. The pictures
are drawn with Pillow and go through the same upload pipeline, so they have real
variants. Idempotent: existing categories and products (by name) are left alone."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from io import BytesIO

import anyio.to_thread
from PIL import Image, ImageDraw, ImageFont

from mall.catalog import service
from mall.catalog.models import Category, Product
from mall.catalog.schemas import CategoryIn, ProductIn, SkuIn

log = logging.getLogger("mall.catalog.demo")

Rgb = tuple[int, int, int]


@dataclass(frozen=True)
class DemoCategory:
    name: str
    color: Rgb
    label: str
    children: tuple[str, ...]


@dataclass(frozen=True)
class DemoProduct:
    name: str
    subtitle: str
    category: str
    list_price: int
    color: Rgb
    shape: str
    label: str
    skus: list[tuple[dict[str, str], int, int, str]]
    delivery_modes: tuple[str, ...] = ("express",)
    on_shelf: bool = True
    description: str = ""


CATEGORIES = (
    DemoCategory("洗护", (88, 166, 214), "CARE", ("洗衣液", "洗发沐浴")),
    DemoCategory("服饰", (214, 140, 88), "WEAR", ("T恤", "袜子")),
    DemoCategory("家居", (120, 180, 120), "HOME", ("收纳", "毛巾")),
)

PRODUCTS = (
    DemoProduct(
        "植萃洗衣液 2kg",
        "新会员专享体验装，温和不伤手",
        "洗衣液",
        5990,
        (70, 150, 210),
        "bottle",
        "LAUNDRY",
        [({"规格": "2kg"}, 5990, 500, "DEMO-LD-2K"), ({"规格": "2kg×2"}, 10900, 200, "DEMO-LD-4K")],
        ("express", "same_city", "pickup"),
        description="植物来源表活，低泡易漂，适合手洗和机洗。",
    ),
    DemoProduct(
        "氨基酸洗发水",
        "温和清洁 · 无硅油",
        "洗发沐浴",
        6900,
        (150, 120, 200),
        "bottle",
        "SHAMPOO",
        [({"香型": "白茶"}, 6900, 120, "DEMO-SH-TEA"), ({"香型": "柑橘"}, 6900, 80, "DEMO-SH-CIT")],
        ("express", "same_city"),
    ),
    DemoProduct(
        "香氛沐浴露",
        "持久留香 500ml",
        "洗发沐浴",
        5900,
        (230, 150, 170),
        "bottle",
        "BODY WASH",
        [({"规格": "500ml"}, 5900, 150, "DEMO-BW-500")],
    ),
    DemoProduct(
        "纯棉基础款T恤",
        "240g 精梳棉，不易变形",
        "T恤",
        9900,
        (240, 240, 236),
        "tee",
        "BASIC TEE",
        [
            ({"颜色": color, "尺码": size}, 9900, 30, f"DEMO-TS-{code}-{size}")
            for color, code in (("白", "W"), ("黑", "B"))
            for size in ("M", "L", "XL")
        ],
        ("express", "pickup"),
        description="经典圆领，重磅精梳棉，日常百搭。",
    ),
    DemoProduct(
        "精梳棉中筒袜 5双装",
        "透气吸汗",
        "袜子",
        3900,
        (110, 110, 120),
        "sock",
        "SOCKS x5",
        [({"颜色": "混色", "尺码": "均码"}, 3900, 300, "DEMO-SK-MIX")],
    ),
    DemoProduct(
        "可叠加收纳箱",
        "加厚 PP 材质",
        "收纳",
        4900,
        (200, 190, 150),
        "box",
        "STORAGE",
        [({"容量": "30L"}, 4900, 60, "DEMO-BX-30"), ({"容量": "50L"}, 6900, 40, "DEMO-BX-50")],
        ("express", "same_city"),
    ),
    DemoProduct(
        "长绒棉浴巾",
        "柔软亲肤 70×140cm",
        "毛巾",
        7900,
        (120, 170, 200),
        "towel",
        "TOWEL",
        [({"颜色": "米白"}, 7900, 50, "DEMO-TW-IVY"), ({"颜色": "雾蓝"}, 7900, 0, "DEMO-TW-BLU")],
    ),
    DemoProduct(
        "羊毛混纺针织开衫",
        "秋季新品，即将上架",
        "服饰",
        29900,
        (160, 90, 80),
        "tee",
        "CARDIGAN",
        [({"颜色": "酒红", "尺码": "M"}, 29900, 20, "DEMO-CD-RED-M")],
        on_shelf=False,
    ),
)


def _draw(color: Rgb, shape: str, label: str, size: int) -> bytes:
    """A simple product shot: a soft background, a shape and a label."""
    background = tuple(min(255, c + (255 - c) * 3 // 4) for c in color)
    im = Image.new("RGB", (size, size), background)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(im)
    s = size / 800
    if shape == "bottle":
        draw.rounded_rectangle((290 * s, 220 * s, 510 * s, 640 * s), 40 * s, fill=color)
        draw.rectangle((355 * s, 150 * s, 445 * s, 225 * s), fill=color)
    elif shape == "tee":
        draw.polygon(
            [
                (p[0] * s, p[1] * s)
                for p in (
                    (250, 200),
                    (550, 200),
                    (660, 330),
                    (580, 380),
                    (560, 620),
                    (240, 620),
                    (220, 380),
                    (140, 330),
                )
            ],
            fill=color,
            outline=(90, 90, 90),
            width=max(1, int(4 * s)),
        )
    elif shape == "sock":
        draw.polygon(
            [
                (p[0] * s, p[1] * s)
                for p in ((330, 160), (450, 160), (450, 500), (560, 560), (520, 650), (330, 580))
            ],
            fill=color,
        )
    elif shape == "box":
        draw.rectangle((200 * s, 300 * s, 600 * s, 620 * s), fill=color)
        draw.rectangle((180 * s, 260 * s, 620 * s, 310 * s), fill=tuple(c * 4 // 5 for c in color))
    else:
        for i in range(4):
            top = (230 + i * 60) * s
            draw.rounded_rectangle((200 * s, top, 600 * s, top + 140 * s), 20 * s, fill=color)
    font = ImageFont.load_default(size=max(12, int(56 * s)))
    box = draw.textbbox((0, 0), label, font=font)
    width = box[2] - box[0]
    draw.text(((size - width) / 2, 690 * s), label, fill=(60, 60, 60), font=font)
    out = BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


async def _picture(color: Rgb, shape: str, label: str, size: int = 750) -> str:
    data = await anyio.to_thread.run_sync(_draw, color, shape, label, size)
    stored = await service.store_image(None, data)
    return stored.url


async def _category(name: str, parent: int | None, icon_of: DemoCategory | None) -> Category:
    existing = await Category.filter(name=name, parent_id=parent).first()
    if existing is not None:
        return existing
    icon = ""
    if icon_of is not None:
        icon = await _picture(icon_of.color, "box", icon_of.label, size=150)
    sort_order = len(await Category.filter(parent_id=parent).values_list("id", flat=True))
    return await service.create_category(
        None, CategoryIn(name=name, parent_id=parent, icon=icon, sort_order=sort_order)
    )


async def seed() -> None:
    by_name: dict[str, int] = {}
    for top in CATEGORIES:
        root = await _category(top.name, None, top)
        by_name[top.name] = root.id
        for child in top.children:
            by_name[child] = (await _category(child, root.id, None)).id
    created = 0
    for item in PRODUCTS:
        if await Product.filter(name=item.name, deleted_at__isnull=True).exists():
            continue
        picture = await _picture(item.color, item.shape, item.label)
        await service.create_product(
            None,
            ProductIn(
                name=item.name,
                subtitle=item.subtitle,
                description=item.description or item.subtitle,
                category_id=by_name[item.category],
                images=[picture],
                list_price=item.list_price,
                on_shelf=item.on_shelf,
                delivery_modes=list(item.delivery_modes),  # type: ignore[arg-type]
                skus=[
                    SkuIn(specs=specs, price=price, stock=stock, code=code)
                    for specs, price, stock, code in item.skus
                ],
            ),
        )
        created += 1
    log.info("demo catalog: %d products added", created)

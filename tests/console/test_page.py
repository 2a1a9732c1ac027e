"""The console page is served, works offline (no outside URLs) and every text it shows
has both a Chinese and an English version."""

from __future__ import annotations

import re

import httpx
import pytest

from mall.config import project_root

ADMIN = project_root() / "static" / "admin"
# keys built at runtime, e.g. t(`state_${s.state}`)
DYNAMIC = {
    "band_good", "band_warn", "band_bad", "band_none",
    "coupon_cash", "coupon_threshold", "coupon_discount", "coupon_gift", "coupon_exchange",
    "import_rows", "import_created", "import_updated", "import_unchanged", "import_errors",
    "kind_gift", "kind_voucher", "kind_activity",
    "mode_express", "mode_same_city", "mode_pickup",
    "role_admin", "role_ops",
    "scope_all", "scope_categories", "scope_products",
    "state_upcoming", "state_live", "state_ended", "state_closed",
    "status_on", "status_off", "status_draft", "status_archived", "status_on_sale",
    "status_off_sale",
    "pred_purchase_count", "pred_last_purchase", "pred_bound_platform", "pred_level",
    "pred_birthday_month", "pred_points_balance", "pred_tags",
    "source_all", "source_mall", "source_marketplace",
    "count_sent", "count_skipped_by_cap", "count_no_grant", "count_refused", "count_failed",
    "campaign_queued", "campaign_running", "campaign_done",
    "event_completed", "event_refunded", "bind_share", "bind_login", "bind_ops",
    "order_status_pending_payment", "order_status_paid", "order_status_shipped",
    "order_status_completed", "order_status_cancelled", "order_status_closed",
    "order_status_refunded", "delivery_express", "delivery_same_city", "delivery_pickup",
    "coupon_status_usable", "coupon_status_locked", "coupon_status_used",
    "coupon_status_expired", "coupon_status_voided",
    "wallet_kind_topup", "wallet_kind_pay", "wallet_kind_refund", "wallet_kind_topup_refund",
    "wallet_kind_topup_refund_return", "wallet_kind_adjust",
    "topup_pending", "topup_paid", "topup_closed",
    "rule_policy_member_day", "rule_policy_better", "rule_policy_both",
    "rule_expiry_end_of_following_year", "rule_expiry_days", "rule_expiry_never",
    "rule_level_level", "rule_level_name", "rule_level_threshold", "rule_level_discount_percent",
    "rule_level_member_day_percent", "rule_level_birthday_points",
    "rule_fen_per_point", "rule_growth_from_paid", "rule_daily_points", "rule_sign_in_repeat",
    "rule_member_day_of_month", "rule_member_day_policy", "rule_points_per_yuan",
    "rule_points_max_share", "rule_free_shipping_over", "rule_express_fee", "rule_same_city_fee",
    "rule_pickup_fee", "rule_expiry_mode", "rule_expiry_days_n",
}  # fmt: skip


async def test_console_page_is_served(client: httpx.AsyncClient) -> None:
    for path in ("/admin", "/admin/"):
        r = await client.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/static/admin/js/main.js">' in r.text
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    r = await client.get("/static/admin/js/main.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert (await client.get("/static/admin/app.css")).status_code == 200


@pytest.mark.nodb
def test_no_outside_assets() -> None:
    for path in ADMIN.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text("utf-8")
            # only the SVG namespace is an absolute URL
            urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
            assert not urls, (path, urls)


def _dict_keys(source: str, name: str) -> set[str]:
    body = source.split(f"const {name} = {{", 1)[1].split("\n};", 1)[0]
    return set(re.findall(r"^\s+([a-z0-9_]+):", body, re.M))


def _merged_keys(source: str, name: str) -> set[str]:
    """Keys of the page texts merged in by `Object.assign(DICTS.zh, {...})` blocks."""
    keys: set[str] = set()
    for body in re.findall(rf"Object\.assign\(DICTS\.{name}, \{{(.*?)\n\}}\);", source, re.S):
        keys |= set(re.findall(r"^\s+([a-z0-9_]+):", body, re.M))
    return keys


@pytest.mark.nodb
def test_every_text_has_both_languages() -> None:
    source = (ADMIN / "js" / "i18n.js").read_text("utf-8")
    zh, en = _dict_keys(source, "zh"), _dict_keys(source, "en")
    assert zh == en, (zh - en, en - zh)
    # the pages' own texts (i18n_ops.js, ...), merged into the console's
    for path in sorted((ADMIN / "js").glob("i18n_*.js")):
        extra = path.read_text("utf-8")
        extra_zh, extra_en = _merged_keys(extra, "zh"), _merged_keys(extra, "en")
        assert extra_zh and extra_zh == extra_en, (path, extra_zh - extra_en, extra_en - extra_zh)
        zh |= extra_zh
    used = set(DYNAMIC)
    for path in ADMIN.rglob("*.js"):
        text = path.read_text("utf-8")
        used |= set(re.findall(r"\bt\(\"([a-z0-9_]+)\"", text))
        used |= set(re.findall(r"label: \"(menu_[a-z_]+)\"", text))
    assert used - zh == set()

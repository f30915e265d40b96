"""Configuration from the environment and `.env` (documented in `.env.example`)."""

from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Literal, TypedDict

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.domains.execution.margin import DEFAULT_LIQUIDATION_BUFFER_PCT

RiskModeName = Literal["AGGRESSIVE_SMALL_ACCOUNT", "NORMAL", "DEFENSIVE"]


class EngineOptions(TypedDict):
    connect_timeout: float
    statement_timeout: float
    pool_timeout: float
    idle_in_transaction_timeout: float


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./quantum.db"
    db_pool_size: int = Field(default=10, ge=1)
    db_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    db_statement_timeout_seconds: float = Field(default=3.0, gt=0)
    db_pool_timeout_seconds: float = Field(default=2.0, gt=0)
    db_idle_in_transaction_timeout_seconds: float = Field(default=10.0, gt=0)
    redis_url: str | None = None
    redis_prefix: str = "qt"
    redis_timeout_seconds: float = Field(default=0.5, gt=0)
    policy_poll_interval_seconds: float = Field(default=1.0, gt=0)

    api_key: str = ""
    quantum_risk_mode: RiskModeName = "NORMAL"
    log_level: str = "INFO"

    account_id: str = "paper"
    paper_starting_balance: Decimal = Field(default=Decimal(10000), gt=0, allow_inf_nan=False)
    taker_fee_rate: Decimal = Field(default=Decimal("0.0004"), ge=0, lt=1, allow_inf_nan=False)
    markets_file: str | None = None

    max_price_age_seconds: float = Field(default=60.0, gt=0)
    max_price_future_skew_seconds: float = Field(default=5.0, ge=0)
    assumed_stop_distance_pct: Decimal = Field(default=Decimal(2), gt=0, allow_inf_nan=False)
    liquidation_buffer_pct: Decimal = Field(default=DEFAULT_LIQUIDATION_BUFFER_PCT, ge=0, lt=50, allow_inf_nan=False)

    # Execution: the paper exchange fills at the feed's prices
    max_price_deviation_pct: Decimal = Field(default=Decimal(1), gt=0, le=100, allow_inf_nan=False)
    paper_slippage_pct: Decimal = Field(default=Decimal("0.02"), ge=0, lt=10, allow_inf_nan=False)
    price_feed_start: datetime = datetime(2025, 8, 1, tzinfo=UTC)  # within the bundled candles
    price_feed_speed: float = Field(default=1.0, gt=0, le=1_000_000)  # simulated seconds per second
    monitor_interval_seconds: float = Field(default=1.0, gt=0)
    exit_atr_bars: int = Field(default=14, ge=0, le=1000)  # 0: exit plans use the static ladder
    # Where orders go: the paper exchange (default) or Binance USDⓈ-M through ccxt (live; testnet by default)
    exchange: Literal["paper", "binance"] = "paper"
    binance_api_key: SecretStr = SecretStr("")
    binance_secret: SecretStr = SecretStr("")
    binance_testnet: bool = True

    losing_streak_threshold: int = Field(default=3, ge=1)
    losing_streak_leverage_multiplier: Decimal = Field(default=Decimal("0.5"), gt=0, le=1)
    recovery_wins: int = Field(default=2, ge=1)

    sequencer_max_batch: int = Field(default=64, ge=1)

    accept_fallback_signals: bool = False
    signal_fallback_enabled: bool = True
    signal_max_age_seconds: float = Field(default=7200.0, gt=0)  # older newest candle: the signal says stale

    clm_enabled: bool = False
    clm_interval_seconds: float = Field(default=86400.0, gt=0)
    clm_min_new_samples: int = Field(default=24, ge=0)
    clm_symbols: str = "BTC/USDT:USDT,ETH/USDT:USDT"

    model_dir: str = "models"
    market_data_dir: str | None = None
    model_keep_candidates: int = Field(default=5, ge=0)
    promotion_margin_log_loss: float = Field(default=0.002, ge=0)
    promotion_margin_net_return: float = Field(default=0.0, ge=0)

    max_request_body_bytes: int = Field(default=64 * 1024, ge=1)

    strategy_min_trades: int = Field(default=30, ge=2)  # Strategy Brain: closed trades before a source counts

    # Portfolio governance (exposure memory and policy)
    policy_update_interval: float = Field(default=30.0, gt=0)
    min_samples: int = Field(default=50, ge=0)
    conservative_threshold: float = Field(default=0.3, allow_inf_nan=False)
    aggressive_threshold: float = Field(default=0.7, allow_inf_nan=False)
    governance_window: int = Field(default=500, ge=1)
    governance_hysteresis: float = Field(default=0.05, ge=0, allow_inf_nan=False)
    governance_streams_enabled: bool = True  # consume and publish the Redis streams/keys when REDIS_URL is set
    governance_limits_enabled: bool = True  # the portfolio policy is a layer of RiskGuard's limit stack

    # Risk Brain
    riskbrain_min_samples: int = Field(default=30, ge=2)
    riskbrain_window: int = Field(default=1000, ge=2)
    riskbrain_mc_paths: int = Field(default=100_000, ge=100, le=10_000_000)
    riskbrain_interval_seconds: float = Field(default=60.0, ge=0)

    # Operating modes (the "CEO brain")
    modes_enabled: bool = True  # decide the mode and apply it as a layer of RiskGuard's limit stack
    mode_update_interval: float = Field(default=30.0, gt=0)
    mode_min_dwell_seconds: float = Field(default=900.0, ge=0)
    mode_emergency_drawdown_pct: float = Field(default=10.0, gt=0, le=100)
    mode_preservation_drawdown_pct: float = Field(default=5.0, gt=0, le=100)
    mode_expansion_drawdown_pct: float = Field(default=2.0, ge=0, le=100)
    mode_preservation_win_rate: float = Field(default=0.40, ge=0, le=1)
    mode_expansion_win_rate: float = Field(default=0.55, ge=0, le=1)
    mode_min_trades: int = Field(default=20, ge=1)

    def db_engine_options(self) -> "EngineOptions":
        """The database timeouts as `create_engine` keywords: the one place every engine gets them
        (the API, the CLI, the training child process)."""
        return EngineOptions(
            connect_timeout=self.db_connect_timeout_seconds,
            statement_timeout=self.db_statement_timeout_seconds,
            pool_timeout=self.db_pool_timeout_seconds,
            idle_in_transaction_timeout=self.db_idle_in_transaction_timeout_seconds,
        )

    @field_validator("price_feed_start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("PRICE_FEED_START needs a timezone, e.g. 2025-08-01T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _live_needs_keys(self) -> "Settings":
        if self.exchange == "binance" and not (
            self.binance_api_key.get_secret_value() and self.binance_secret.get_secret_value()
        ):
            raise ValueError("EXCHANGE=binance needs BINANCE_API_KEY and BINANCE_SECRET")
        return self

    @field_validator("redis_url", "markets_file", "market_data_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


@lru_cache
def get_settings() -> Settings:
    return Settings()

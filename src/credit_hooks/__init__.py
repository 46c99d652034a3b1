"""litellm-credits: the LiteLLM proxy plugin.

In ``litellm_config.yaml``::

    litellm_settings:
      callbacks: credit_hooks.credits_callback
    general_settings:                       # optional: keys issued by credits-admin
      custom_auth: credit_hooks.auth.user_api_key_auth

The callback is built on first access, so the admin CLI (which imports this
package too) never loads LiteLLM.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .handler import CreditsCallback

__all__ = ["CreditsCallback", "credits_callback"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import handler

    # inside the proxy: mount /credits/* on its app, and start the background jobs
    # now (the proxy loads callbacks in its startup, on its event loop), so the
    # outbox a crashed process left is applied before the first call
    if "litellm.proxy.proxy_server" in sys.modules:
        from . import runtime
        from .routes import mount

        mount()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            runtime.ensure_background_jobs()
    return getattr(handler, name)

"""Started with plain `python`: the Dragon backend must refuse with a clear BackendError."""

import asyncio
import json

from rhapsody_lab.api.errors import BackendError
from rhapsody_lab.backends import DragonExecutionBackendV3


async def main():
    backend = DragonExecutionBackendV3()
    try:
        await backend
        print(json.dumps({"check": "error", "type": None}))
    except BackendError as exc:
        print(json.dumps({"check": "error", "type": type(exc).__name__, "message": str(exc),
                          "state": await backend.state()}))


if __name__ == "__main__":
    asyncio.run(main())

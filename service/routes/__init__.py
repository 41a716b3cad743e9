"""One router per resource: images, codes, v2, models, health, metrics, admin, the demo page.

:data:`WORK_ROUTES` are the work endpoints, which the request core (service/core.py) answers itself.
"""

from service.core import WorkRoute
from service.routes import codes, images, v2

WORK_ROUTES: list[WorkRoute] = [*images.WORK, *codes.WORK, *v2.WORK]

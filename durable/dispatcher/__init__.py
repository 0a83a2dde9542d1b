"""The durable dispatcher daemon: claims runs from PostgreSQL and executes them.

Run it as ``durable-dispatcher --module myapp.workflows`` (or ``python -m dispatcher``);
``--help`` lists every setting. Embed it with ``Dispatcher(settings).serve()``.
"""

from .app import Dispatcher, StartupError, import_workflow_modules
from .settings import DispatcherSettings, load_settings

__all__ = ["Dispatcher", "DispatcherSettings", "StartupError", "import_workflow_modules", "load_settings"]

# Alembic configuration, written by `objects init`.
# The database URL is not kept here: env.py reads OBJECTS_DATABASE_URL from the environment or
# from .env (see migrations/env.py). `objects migrate` runs `alembic upgrade head`.

[alembic]
script_location = ${script_location}
prepend_sys_path = .
path_separator = os
# sqlalchemy.url, when set here, wins over OBJECTS_DATABASE_URL.

[post_write_hooks]

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S

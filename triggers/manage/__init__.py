"""The management REST API at ``/v1/manage/``: APIs, workflows and runs for
operators and CI pipelines, built with Django REST framework.

Each module owns one part: ``base`` (the settings every view shares:
authentication, permissions, envelope, pagination), ``errors`` (the exception
handler and renderer over ``iolinker/errors.py``), ``auth`` (staff tokens and
sessions), ``permissions``, ``pagination``, ``serializers``, ``filters``, the
views by resource (``apis``, ``workflows``, ``executions``), ``schema`` and
``urls``. Views are thin: they parse, call the services the admin and the
management commands call, and answer; no rule lives here.
"""

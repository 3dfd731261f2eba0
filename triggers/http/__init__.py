"""The HTTP layer of triggers: how an HTTP request becomes a service call and
its answer. ``parsing`` reads what the caller sent (body, JSON, query, header
size, ``wait``), ``service`` is the one import of the services it calls,
``transport`` is the one function both stacks call for a trigger (status,
headers, body bytes), ``answers`` builds every answer's status, headers and
body, ``waiters`` bounds the requests that wait for a run, ``drf`` holds the
Django REST framework parts (caller authentication, rate throttle, body
parser), ``views`` the DRF views, and ``django_mirror`` the few Django
internals the WSGI fast path (``iolinker/wsgi.py``) repeats without Django's
request objects.
"""

"""The real django-q2 queue seen from a test: drained in this process, its
backend, its length and the run uids its messages name."""

from django.utils.module_loading import import_string


def drain_queue() -> int:
    """Run every task waiting in the configured django-q2 broker, in this process."""
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    broker = get_broker()
    ran = 0
    while broker.queue_size():  # Redis's dequeue blocks on an empty queue: ask first
        for task_id, payload in broker.dequeue() or []:
            task = SignedPackage.loads(payload)
            func = task["func"]
            func = import_string(func) if isinstance(func, str) else func
            func(*task["args"], **task["kwargs"])
            broker.acknowledge(task_id)
            ran += 1
    return ran


def queue_is_redis() -> bool:
    from django_q.conf import Conf

    return not Conf.ORM


def queued_messages() -> int:
    from django_q.brokers import get_broker

    return get_broker().queue_size()


def queue_message_uids(queue_name: str) -> list[int]:
    """The run uids named by the messages waiting in a platform's queue."""
    from django_q import core_signing
    from django_q.brokers import get_broker
    from django_q.conf import Conf
    from django_q.models import OrmQ
    from django_q.signing import PickleSerializer

    if queue_is_redis():
        broker = get_broker(list_key=queue_name)
        payloads = broker.connection.lrange(broker.list_key, 0, -1)
    else:
        payloads = OrmQ.objects.filter(key=queue_name).values_list("payload", flat=True)
    uids = []
    for payload in payloads:
        # Signed with the platform's queue name as the salt (django-q2's PREFIX).
        task = core_signing.loads(
            payload, key=Conf.SECRET_KEY, salt=queue_name, serializer=PickleSerializer
        )
        uids += task["args"][0]
    return uids

from .datastore import DatastoreTrainTask

__all__ = ["DatastoreTrainTask"]

# The compiled twin has exactly the API of the pure-Python reference.
from robustmq._core.conn_storm import CLOSED as CLOSED
from robustmq._core.conn_storm import CONNECT_ERROR as CONNECT_ERROR
from robustmq._core.conn_storm import MALFORMED as MALFORMED
from robustmq._core.conn_storm import REFUSED as REFUSED
from robustmq._core.conn_storm import TIMED_OUT as TIMED_OUT
from robustmq._core.conn_storm import Storm as Storm
from robustmq._core.conn_storm import connack_status as connack_status

# The compiled twin has exactly the API of the pure-Python reference.
from robustmq._core.lanes import ACCEPT_POLL_NS as ACCEPT_POLL_NS
from robustmq._core.lanes import FAIR_READ as FAIR_READ
from robustmq._core.lanes import AcceptPoll as AcceptPoll
from robustmq._core.lanes import ConnectionCore as ConnectionCore
from robustmq._core.lanes import KeepAliveWheel as KeepAliveWheel
from robustmq._core.lanes import LaneContext as LaneContext
from robustmq._core.lanes import Plan as Plan
from robustmq._core.lanes import PlanCache as PlanCache
from robustmq._core.lanes import SessionCore as SessionCore
from robustmq._core.lanes import connect as connect
from robustmq._core.lanes import forward as forward
from robustmq._core.lanes import plain_connect as plain_connect
from robustmq._core.lanes import scan as scan

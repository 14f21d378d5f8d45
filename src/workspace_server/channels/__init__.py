"""Social channels (spec 06 §3.6): a workspace talks to a team through Slack, Discord, Telegram or Lark.

- `adapters.py`: the four adapters' config schemas and validation, masks;
- `configcrypt.py`: secret config fields encrypted at rest (`ec1:` + AES-GCM, the secrets key);
- `store.py` (SQL), `service.py` (CRUD, send, test, discover), `routes.py` (HTTP);
- `inbound.py`: a provider message → A2A `message/send` through the proxy as `channel:<type>`, the reply
  posted back; `webhook.py`: `POST /webhooks/:type`, every delivery verified before it is read;
- `providers/`: one module per provider, on its maintained SDK, every dial through the egress policy;
- `manager.py`: Telegram long polling, one supervised poller per enabled channel, on the leader only.
"""

from tests.standard.conftest import bearer
from tests.support.messages import message_body


async def test_store_then_list(node, master_token, user_token):
    body = message_body(recipient="bob")
    response = await node.post("/messages", json=body, headers=bearer(master_token))
    assert response.status == 201, await response.text()
    response = await node.get("/messages/bob", headers=bearer(user_token("bob")))
    assert response.status == 200
    page = await response.json()
    assert [m["id"] for m in page["messages"]] == [body["id"]]

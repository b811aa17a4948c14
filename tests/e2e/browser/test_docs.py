"""The API explorer at /docs/: Swagger UI on /openapi.json, calling the API on the same
origin, with a bearer token from its Authorize dialog."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.e2e.conftest import RunningSystem

SERVICES = ("MovieService", "CastService", "UserService", "OrderService")


def test_docs_lists_all_four_services(page: Page) -> None:
    page.goto("/docs")
    expect(page).to_have_url(re.compile(r"/docs/$"))
    for service in SERVICES:
        expect(page.locator(f"#operations-tag-{service}")).to_be_visible()
    expect(page.get_by_role("button", name="Authorize")).to_be_visible()


def test_try_it_out_calls_the_api_on_the_same_origin_with_the_bearer_token(
    page: Page, system: RunningSystem, admin_token: str, base_url: str
) -> None:
    created = system.request(
        "POST",
        "/api/v1/movies",
        {"title": "Tried out", "price": {"currencyCode": "EUR", "amountMinor": "450"}},
        token=admin_token,
    )
    assert created.status == 200, created
    movie_id = created.body["id"]

    # GetMovie, opened by deep linking: anyone may call it.
    page.goto("/docs/#/MovieService/MovieService_GetMovie")
    get_movie = page.locator("#operations-MovieService-MovieService_GetMovie")
    get_movie.get_by_role("button", name="Try it out").click()
    get_movie.locator('tr[data-param-name="id"] input').fill(movie_id)
    get_movie.get_by_role("button", name="Execute").click()
    live = get_movie.locator(".live-responses-table")
    expect(live.locator("tbody .response-col_status").first).to_have_text("200")
    expect(live).to_contain_text("Tried out")
    expect(get_movie.locator(".request-url")).to_contain_text(
        f"{base_url}/api/v1/movies/{movie_id}"
    )

    # ListUsers needs an admin: the token goes in through the Authorize dialog.
    page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".dialog-ux")
    dialog.locator("input").fill(admin_token)
    # Swagger UI names its buttons by aria-label: "Authorize" reads "Apply credentials".
    dialog.get_by_role("button", name="Apply credentials").click()
    expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()
    dialog.locator("button.btn-done").click()

    list_users = page.locator("#operations-UserService-UserService_ListUsers")
    list_users.locator(".opblock-summary").first.click()
    list_users.get_by_role("button", name="Try it out").click()
    list_users.get_by_role("button", name="Execute").click()
    users = list_users.locator(".live-responses-table tbody .response-col_status")
    expect(users.first).to_have_text("200")
    expect(list_users.locator(".curl-command")).to_contain_text(
        re.compile(f"authorization: Bearer {admin_token}", re.IGNORECASE)
    )

"""The web shop in a browser, as a person uses it: browse, register, log in, buy, pay, see
the order, log out; an admin writes the catalogue through its forms; a bad form says what
is wrong next to each field; API data is shown as text, never run."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from playwright.sync_api import Page, Request, expect

from tests.e2e.browser.conftest import log_in, log_in_as_admin
from tests.e2e.conftest import RunningSystem


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _create(system: RunningSystem, token: str, path: str, body: dict[str, Any]) -> Any:
    reply = system.request("POST", path, body, token=token)
    assert reply.status == 200, reply
    return reply.body


def _movie(
    system: RunningSystem, token: str, title: str, *, genre: str, cast_ids: list[str] | None = None
) -> Any:
    return _create(
        system,
        token,
        "/api/v1/movies",
        {
            "title": title,
            "genres": [genre],
            "castIds": cast_ids or [],
            "price": {"currencyCode": "USD", "amountMinor": "1299"},
        },
    )


def test_a_shopper_browses_registers_logs_in_buys_pays_and_logs_out(
    page: Page, system: RunningSystem, admin_token: str
) -> None:
    tag = _tag()
    genre = f"noir-{tag}"
    cast = _create(
        system, admin_token, "/api/v1/casts", {"name": f"Lauren Bacall {tag}", "nationality": "US"}
    )
    movie = _movie(system, admin_token, f"The Big Sleep {tag}", genre=genre, cast_ids=[cast["id"]])
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))

    # Browse one genre, open the movie, see its cast.
    page.goto(f"/?genre={genre}")
    card = page.locator(".movie-card", has_text=movie["title"])
    expect(card).to_contain_text("$12.99")
    card.get_by_role("link", name=movie["title"]).click()
    expect(page).to_have_url(re.compile(f"/movies/{movie['id']}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(movie["title"])
    expect(page.locator("#movie-cast")).to_contain_text(f"Lauren Bacall {tag} (US)")
    page.get_by_role("button", name="Add to basket").click()
    expect(page.locator("#basket-link")).to_have_text("Basket (1)")

    # Register: the page says where the link went; the link opens the account; log in,
    # then log out.
    page.get_by_role("link", name="Register").click()
    email = f"shopper-{tag}@example.com"
    page.get_by_label("Email").fill(email)
    page.get_by_label("Your name").fill("Sam Shopper")
    page.get_by_label("Password").fill("popcorn-and-films")
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#register-sent")).to_have_text(
        f"We sent a mail to {email}. Follow the link in it to open your account."
    )
    expect(page.locator("#register")).to_be_hidden()
    base, token = system.mailbox.link(email)
    assert base == f"http://localhost:{system.port}", "the link leads to this front door"
    page.goto(f"/verify#token={token}")
    expect(page).to_have_url(re.compile("/verify$"))  # the token leaves the address bar
    page.get_by_label("The password you chose when registering").fill("not-the-password")
    page.get_by_role("button", name="Open my account").click()
    expect(page.locator("#password-error")).to_contain_text("not the password chosen")
    page.get_by_label("The password you chose when registering").fill("popcorn-and-films")
    page.get_by_role("button", name="Open my account").click()
    expect(page.locator("#verify-status")).to_have_text("Your account is open, Sam Shopper. Log in")
    page.locator("#verify-login").click()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("popcorn-and-films")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#signed-in-as")).to_have_text("Signed in as Sam Shopper")
    # The link again: the same account, still open.
    page.goto(f"/verify#token={token}")
    page.get_by_label("The password you chose when registering").fill("popcorn-and-films")
    page.get_by_role("button", name="Open my account").click()
    expect(page.locator("#verify-status")).to_have_text("Your account is open, Sam Shopper. Log in")
    page.goto("/")
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-link")).to_be_visible()

    # The basket survives; buying asks to log in first, and comes back to the basket.
    page.goto("/basket")
    expect(page.locator("#basket-items")).to_contain_text(movie["title"])
    page.get_by_role("button", name="Buy").click()
    page.locator("#basket-form .form-error").get_by_role("link", name="Log in").click()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("popcorn-and-films")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile("/basket$"))
    expect(page.locator("#signed-in-as")).to_have_text("Signed in as Sam Shopper")

    # Buy, pay with a declined card, then with one that succeeds.
    page.get_by_role("button", name="Buy").click()
    expect(page).to_have_url(re.compile(r"/orders/[^/]+$"))
    expect(page.locator("#basket-link")).to_have_text("Basket (0)")
    expect(page.locator("#order-status")).to_have_text("Waiting for payment")
    expect(page.locator("#order-total")).to_have_text("$12.99")
    page.get_by_label("Test card").select_option("tok_chargeDeclined")
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#pay-result")).to_have_text(
        "Payment declined: the card was declined. Try another card."
    )
    expect(page.locator("#order-status")).to_have_text("Payment declined")
    page.get_by_label("Test card").select_option("tok_visa")
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#pay-result")).to_contain_text("Payment accepted")
    expect(page.locator("#order-status")).to_have_text("Paid")
    expect(page.locator("#pay")).to_be_hidden()
    expect(page.locator("#payments li")).to_have_count(2)
    order_id = page.url.rsplit("/", 1)[1]

    # My orders lists it as paid; the API agrees.
    page.locator("#site-header").get_by_role("link", name="My orders").click()
    row = page.locator(f'tr[data-order-id="{order_id}"]')
    expect(row).to_contain_text(movie["title"])
    expect(row.locator(".order-status")).to_have_text("Paid")
    token = system.login(email, "popcorn-and-films")
    stored = system.request("GET", f"/api/v1/orders/{order_id}", token=token)
    assert stored.body["status"] == "ORDER_STATUS_PAID"
    assert [item["movieId"] for item in stored.body["items"]] == [movie["id"]]

    # Log out: the session ends on the server (its token is refused), the token is gone
    # from the tab, and it was never in any address.
    shop_token = page.evaluate("sessionStorage.getItem('cinema.token')")
    me = f"/api/v1/orders/{order_id}"
    assert system.request("GET", me, token=shop_token).status == 200
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-link")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('cinema.token')") is None
    deadline = time.monotonic() + 5
    while system.request("GET", me, token=shop_token).status != 401:
        assert time.monotonic() < deadline, "the shop's token still works after Log out"
        time.sleep(0.1)
    jwt_like = re.compile(r"eyJ[\w-]+\.[\w-]+\.")
    assert not [url for url in urls if jwt_like.search(url)]


def test_an_admin_writes_the_catalogue_through_the_forms(page: Page, system: RunningSystem) -> None:
    tag = _tag()
    log_in_as_admin(page)
    expect(page.locator("#signed-in-as")).to_contain_text("admin")
    page.locator("#site-header").get_by_role("link", name="Admin").click()

    cast_form = page.locator("#add-cast")
    cast_form.get_by_label("Name").fill(f"Pam Grier {tag}")
    cast_form.get_by_label("Nationality").fill("US")
    cast_form.get_by_role("button", name="Add cast member").click()
    expect(page.locator("#add-cast-status")).to_have_text(f"Added Pam Grier {tag}.")

    # An empty movie: the server's field errors land next to their fields.
    movie_form = page.locator("#add-movie")
    movie_form.get_by_role("button", name="Add movie").click()
    expect(page.locator("#movie-title-input-error")).to_contain_text("required")
    expect(page.locator("#movie-price-input-error")).to_contain_text("required")
    expect(movie_form.get_by_label("Title")).to_have_attribute("aria-invalid", "true")

    title = f"Coffy {tag}"
    movie_form.get_by_label("Title").fill(title)
    movie_form.get_by_label("Plot").fill("A nurse takes on the city's dealers.")
    movie_form.get_by_label("Genres").fill(f"action-{tag}, crime")
    movie_form.get_by_label("Price").fill("7.50")
    movie_form.get_by_label("Cast").select_option(label=f"Pam Grier {tag} (US)")
    movie_form.get_by_role("button", name="Add movie").click()
    expect(page.locator("#add-movie-status")).to_contain_text(f"Added “{title}”.")
    expect(page.locator("#movie-title-input-error")).to_be_empty()

    page.locator("#new-movie-link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    expect(page.locator("#movie-price")).to_have_text("$7.50")
    expect(page.locator("#movie-cast")).to_contain_text(f"Pam Grier {tag}")
    movie_id = page.url.rsplit("/", 1)[1]

    # Edit it on its own page.
    edit = page.locator("#edit-movie")
    expect(edit.get_by_label("Title")).to_have_value(title)
    edit.get_by_label("Price").fill("6")
    edit.get_by_role("button", name="Save changes").click()
    expect(page.locator("#edit-status")).to_have_text("Saved.")
    expect(page.locator("#movie-price")).to_have_text("$6.00")

    stored = system.request("GET", f"/api/v1/movies/{movie_id}").body
    assert stored["price"] == {"currencyCode": "USD", "amountMinor": "600"}
    assert stored["genres"] == [f"action-{tag}", "crime"]
    assert len(stored["castIds"]) == 1

    # And a cast member is edited on the admin page.
    page.goto("/admin")
    row = page.locator("#casts li", has_text=f"Pam Grier {tag}")
    row.get_by_role("button", name="Edit").click()
    page.locator("#edit-cast").get_by_label("Nationality").fill("American")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#casts")).to_contain_text(f"Pam Grier {tag} (American)")


def test_a_bad_form_shows_each_error_next_to_its_field(page: Page) -> None:
    page.goto("/register")
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#email-error")).to_contain_text("email address")
    expect(page.locator("#display-name-error")).to_contain_text("required")
    expect(page.locator("#password-error")).to_contain_text("8 characters")
    expect(page.get_by_label("Email")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#register .form-error")).to_have_text(
        "Please correct the fields marked above."
    )

    # A link whose token makes nothing says so, and how to go on.
    page.goto("/verify#token=not-a-token-we-sent")
    page.get_by_label("The password you chose when registering").fill("popcorn-and-films")
    page.get_by_role("button", name="Open my account").click()
    expect(page.locator("#verify-status")).to_contain_text("The link is not valid")
    expect(page.locator("#verify")).to_be_hidden()
    again = page.locator("#verify-status").get_by_role("link", name="Register again")
    expect(again).to_be_visible()

    # An error that names no field is a message.
    page.goto("/login")
    page.get_by_label("Email").fill("nobody@example.com")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login .form-error")).to_have_text("Wrong email or password.")
    expect(page.locator("#login-link")).to_be_visible()


def test_the_catalogue_pages_forward_and_back(
    page: Page, system: RunningSystem, admin_token: str
) -> None:
    genre = f"paged-{_tag()}"
    titles = [f"Serial {n} {genre}" for n in range(6)]
    for title in titles:
        _movie(system, admin_token, title, genre=genre)

    page.goto(f"/?genre={genre}&pageSize=5")
    cards = page.locator(".movie-card h2")
    expect(cards).to_have_text(titles[:5])
    expect(page.get_by_role("button", name="Previous")).to_be_disabled()
    page.get_by_role("button", name="Next").click()
    expect(cards).to_have_text(titles[5:])
    expect(page.locator("#page-number")).to_have_text("Page 2")
    expect(page.get_by_role("button", name="Next")).to_be_disabled()
    page.get_by_role("button", name="Previous").click()
    expect(cards).to_have_text(titles[:5])

    # The genre filter is a form too.
    page.get_by_label("Genre").fill(f"no-such-{genre}")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#status")).to_have_text(f"No movies in “no-such-{genre}”.")


def test_api_data_is_shown_as_text_never_run(
    page: Page, system: RunningSystem, admin_token: str
) -> None:
    genre = f"xss-{_tag()}"
    title = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    movie = _movie(system, admin_token, title, genre=genre)
    blocked: list[Request] = []
    page.on("request", lambda request: blocked.append(request) if "/x" in request.url else None)

    page.goto(f"/?genre={genre}")
    expect(page.locator(".movie-card h2")).to_have_text(title)
    page.goto(f"/movies/{movie['id']}")
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    assert page.evaluate("window.pwned") is None
    assert page.locator("main img").count() == 0
    assert blocked == []


def test_pages_that_need_a_login_say_so(page: Page) -> None:
    page.goto("/orders")
    expect(page.locator("#status")).to_contain_text("Log in to see your orders.")
    page.goto("/admin")
    expect(page.locator("#status")).to_contain_text("Log in to manage the catalogue.")
    expect(page.locator("#admin")).to_be_hidden()


def test_a_user_who_is_not_an_admin_gets_no_admin_forms(page: Page, system: RunningSystem) -> None:
    tag = _tag()
    email = f"plain-{tag}@example.com"
    system.register(email, "popcorn-and-films", "Plain")
    log_in(page, email, "popcorn-and-films")
    expect(page.locator("#site-header").get_by_role("link", name="Admin")).to_have_count(0)
    page.goto("/admin")
    expect(page.locator("#status")).to_have_text("Only an admin may manage the catalogue.")
    expect(page.locator("#admin")).to_be_hidden()

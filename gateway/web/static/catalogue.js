// The catalogue: one page of movies at a time, optionally of one genre.
//
// ListMovies pages forward with opaque tokens; "Previous" goes back through the tokens
// this page was reached with. The genre is kept in the address (/?genre=...), so a genre
// can be linked to; tokens are not, they only mean something with the same filters.

import { api } from "./api.js";
import { addToBasket } from "./session.js";
import { clearErrors, el, fill, formatMoney, renderHeader, say, showErrors, unsay } from "./ui.js";

const form = document.getElementById("filter");
const list = document.getElementById("movies");
const status = document.getElementById("status");
const previousButton = document.getElementById("previous");
const nextButton = document.getElementById("next");
const pageNumber = document.getElementById("page-number");
const genreInput = document.getElementById("genre");
const pageSizeInput = document.getElementById("page-size");
const genres = new Set();

const state = {
  genre: new URLSearchParams(window.location.search).get("genre") || "",
  pageSize: Number(new URLSearchParams(window.location.search).get("pageSize")) || 10,
  token: "",
  nextToken: "",
  earlier: [],
};

function movieCard(movie) {
  const add = el("button", { type: "button", class: "add", "data-movie-id": movie.id }, "Add to basket");
  add.addEventListener("click", () => {
    addToBasket(movie.id);
    renderHeader();
    say(status, `Added “${movie.title}” to your basket. `, "success", el("a", { href: "/basket" }, "Go to basket"));
  });
  return el(
    "li",
    { class: "movie-card" },
    el("h2", {}, el("a", { href: `/movies/${encodeURIComponent(movie.id)}` }, movie.title)),
    el("p", { class: "price" }, formatMoney(movie.price)),
    el(
      "p",
      { class: "genres" },
      (movie.genres || []).map((genre) =>
        el("a", { href: `/?genre=${encodeURIComponent(genre)}`, class: "tag" }, genre),
      ),
    ),
    add,
  );
}

async function load() {
  clearErrors(form);
  const query = { pageSize: state.pageSize, pageToken: state.token, genre: state.genre };
  say(status, "Loading movies…");
  let page;
  try {
    page = await api("GET", "/api/v1/movies", { query, auth: false });
  } catch (error) {
    fill(list);
    showErrors(form, error);
    say(status, error.message, "error");
    return;
  }
  const movies = page.movies || [];
  fill(list, movies.map(movieCard));
  for (const movie of movies) {
    for (const genre of movie.genres || []) {
      genres.add(genre);
    }
  }
  fill(document.getElementById("genres"), [...genres].sort().map((g) => el("option", { value: g })));
  state.nextToken = page.nextPageToken || "";
  previousButton.disabled = state.earlier.length === 0;
  nextButton.disabled = !state.nextToken;
  fill(pageNumber, `Page ${state.earlier.length + 1}`);
  if (movies.length === 0) {
    say(status, state.genre ? `No movies in “${state.genre}”.` : "No movies yet.");
  } else {
    unsay(status);
  }
}

function showAddress() {
  const params = new URLSearchParams();
  if (state.genre) {
    params.set("genre", state.genre);
  }
  if (state.pageSize !== 10) {
    params.set("pageSize", String(state.pageSize));
  }
  const query = params.toString();
  window.history.replaceState(null, "", query ? `/?${query}` : "/");
}

function restart() {
  state.token = "";
  state.earlier = [];
  showAddress();
  load();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  state.genre = genreInput.value.trim();
  state.pageSize = Number(pageSizeInput.value);
  restart();
});
document.getElementById("all-genres").addEventListener("click", () => {
  genreInput.value = "";
  state.genre = "";
  restart();
});
nextButton.addEventListener("click", () => {
  state.earlier.push(state.token);
  state.token = state.nextToken;
  load();
});
previousButton.addEventListener("click", () => {
  state.token = state.earlier.pop() || "";
  load();
});

renderHeader();
genreInput.value = state.genre;
if ([...pageSizeInput.options].some((o) => Number(o.value) === state.pageSize)) {
  pageSizeInput.value = String(state.pageSize);
}
load();

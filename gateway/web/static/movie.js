// One movie with its cast members (MOVIE_VIEW_FULL); an admin also gets its edit form.

import { api } from "./api.js";
import { fillMovieForm, loadCastOptions, readMovieForm } from "./movie-form.js";
import { addToBasket, session } from "./session.js";
import {
  busy,
  clearErrors,
  el,
  fill,
  formatMoney,
  idFromPath,
  renderHeader,
  say,
  showErrors,
  unsay,
} from "./ui.js";

const movieId = idFromPath();
const status = document.getElementById("status");
const article = document.getElementById("movie");
const form = document.getElementById("edit-movie");
const editStatus = document.getElementById("edit-status");
// Every field the form edits: the mask sends them all, so clearing one clears it.
const UPDATE_MASK = "title,plot,genres,castIds,price";

function show(movie) {
  document.title = `${movie.title} · Cinema`;
  fill(document.getElementById("movie-title"), movie.title);
  fill(document.getElementById("movie-price"), formatMoney(movie.price));
  fill(
    document.getElementById("movie-genres"),
    (movie.genres || []).map((genre) =>
      el("a", { href: `/?genre=${encodeURIComponent(genre)}`, class: "tag" }, genre),
    ),
  );
  fill(document.getElementById("movie-plot"), movie.plot || "");
  const members = movie.castMembers || [];
  fill(
    document.getElementById("movie-cast"),
    members.length
      ? members.map((cast) =>
          el(
            "li",
            { class: "cast-member" },
            el("span", { class: "name" }, cast.name),
            cast.nationality ? el("span", { class: "nationality" }, ` (${cast.nationality})`) : null,
          ),
        )
      : el("li", { class: "hint" }, "No cast members listed."),
  );
  article.hidden = false;
}

async function load() {
  try {
    const movie = await api("GET", `/api/v1/movies/${encodeURIComponent(movieId)}`, {
      query: { view: "MOVIE_VIEW_FULL" },
      auth: false,
    });
    unsay(status);
    show(movie);
    return movie;
  } catch (error) {
    say(status, error.status === 404 ? "There is no such movie." : error.message, "error");
    return null;
  }
}

document.getElementById("add-to-basket").addEventListener("click", () => {
  addToBasket(movieId);
  renderHeader();
  say(status, "Added to your basket. ", "success", el("a", { href: "/basket" }, "Go to basket"));
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  const movie = readMovieForm(form);
  if (movie === null) {
    fill(form.querySelector(".form-error"), "Please correct the fields marked above.");
    return;
  }
  await busy(document.getElementById("save-movie"), async () => {
    try {
      const saved = await api("PATCH", `/api/v1/movies/${encodeURIComponent(movieId)}`, {
        query: { updateMask: UPDATE_MASK },
        body: movie,
      });
      say(editStatus, "Saved.", "success");
      // Saved answers the BASIC view: read the FULL one again for the cast names.
      await load();
      fillMovieForm(form, saved);
    } catch (error) {
      fill(editStatus);
      showErrors(form, error);
    }
  });
});

async function start() {
  renderHeader();
  const movie = await load();
  const current = session();
  if (movie && current && current.isAdmin) {
    try {
      await loadCastOptions(form, movie.castIds || []);
    } catch (error) {
      say(editStatus, error.message, "error");
    }
    fillMovieForm(form, movie);
    document.getElementById("edit-section").hidden = false;
  }
}

start();

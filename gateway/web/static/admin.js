// The admin's page: add movies and cast members, edit cast members. Movies are edited on
// their own page. The role shown here comes from the token's claims, for display only:
// the services check the role on every write.

import { api } from "./api.js";
import { loadCastOptions, readMovieForm } from "./movie-form.js";
import { session } from "./session.js";
import { busy, clearErrors, el, fill, renderHeader, requireSignIn, say, showErrors } from "./ui.js";

const status = document.getElementById("status");
const movieForm = document.getElementById("add-movie");
const castForm = document.getElementById("add-cast");
const editForm = document.getElementById("edit-cast");
const castList = document.getElementById("casts");
let editing = null;

async function loadCasts() {
  const page = await api("GET", "/api/v1/casts", { query: { pageSize: 1000 }, auth: false });
  const casts = [...(page.casts || [])].sort((a, b) => a.name.localeCompare(b.name));
  fill(
    castList,
    casts.length
      ? casts.map((cast) => {
          const edit = el("button", { type: "button", class: "secondary small" }, "Edit");
          edit.addEventListener("click", () => startEditing(cast));
          return el(
            "li",
            { "data-cast-id": cast.id },
            el("span", { class: "name" }, cast.name),
            cast.nationality ? ` (${cast.nationality})` : "",
            " ",
            edit,
          );
        })
      : el("li", { class: "hint" }, "No cast members yet."),
  );
  await loadCastOptions(movieForm, [...movieForm.elements.castIds.selectedOptions].map((o) => o.value));
}

function startEditing(cast) {
  editing = cast;
  clearErrors(editForm);
  fill(document.getElementById("edit-cast-title"), cast.name);
  editForm.elements.name.value = cast.name;
  editForm.elements.nationality.value = cast.nationality || "";
  editForm.hidden = false;
  editForm.elements.name.focus();
}

movieForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(movieForm);
  const movieStatus = document.getElementById("add-movie-status");
  fill(movieStatus);
  const movie = readMovieForm(movieForm);
  if (movie === null) {
    fill(movieForm.querySelector(".form-error"), "Please correct the fields marked above.");
    return;
  }
  await busy(document.getElementById("add-movie-button"), async () => {
    try {
      const created = await api("POST", "/api/v1/movies", { body: movie });
      movieForm.reset();
      say(
        movieStatus,
        `Added “${created.title}”. `,
        "success",
        el("a", { href: `/movies/${encodeURIComponent(created.id)}`, id: "new-movie-link" }, "Open it"),
      );
    } catch (error) {
      showErrors(movieForm, error);
    }
  });
});

castForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(castForm);
  const castStatus = document.getElementById("add-cast-status");
  const nationality = castForm.elements.nationality.value.trim();
  const cast = { name: castForm.elements.name.value.trim() };
  if (nationality) {
    cast.nationality = nationality;
  }
  await busy(document.getElementById("add-cast-button"), async () => {
    try {
      const created = await api("POST", "/api/v1/casts", { body: cast });
      castForm.reset();
      say(castStatus, `Added ${created.name}.`, "success");
      await loadCasts();
    } catch (error) {
      showErrors(castForm, error);
    }
  });
});

editForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(editForm);
  const nationality = editForm.elements.nationality.value.trim();
  // Both fields in the mask: an empty nationality clears it (unknown).
  const cast = { name: editForm.elements.name.value.trim() };
  if (nationality) {
    cast.nationality = nationality;
  }
  await busy(document.getElementById("save-cast"), async () => {
    try {
      const saved = await api("PATCH", `/api/v1/casts/${encodeURIComponent(editing.id)}`, {
        query: { updateMask: "name,nationality" },
        body: cast,
      });
      editForm.hidden = true;
      say(document.getElementById("edit-cast-status"), `Saved ${saved.name}.`, "success");
      await loadCasts();
    } catch (error) {
      showErrors(editForm, error);
    }
  });
});

document.getElementById("cancel-edit-cast").addEventListener("click", () => {
  editForm.hidden = true;
  editing = null;
});

async function start() {
  renderHeader();
  if (!requireSignIn(status, "manage the catalogue")) {
    return;
  }
  if (!session().isAdmin) {
    say(status, "Only an admin may manage the catalogue.", "error");
    return;
  }
  document.getElementById("admin").hidden = false;
  try {
    await loadCasts();
  } catch (error) {
    say(status, error.message, "error");
  }
}

start();

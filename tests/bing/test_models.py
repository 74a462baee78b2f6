"""Response parsing against the reference's own example JSON, and tolerance of odd input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bingcrawl.bing.models import (
    Image,
    ImageInsights,
    ImageKnowledge,
    Images,
    Query,
    ResponseFormatError,
    TrendingImages,
    parse_error_response,
)
from bingcrawl.errors import ServerError

Load = Callable[[str], Any]


def test_images_from_blog_example(fixture_json: Load) -> None:
    images = Images.from_json(fixture_json("images_search.json"))
    assert images.next_offset == 38
    assert images.total_estimated_matches == 475
    assert images.current_offset == 0
    assert len(images.value) == 1
    image = images.value[0]
    assert image.content_url is not None
    assert image.content_url.endswith("aston-martin-car-1609287727yik.jpg")
    assert image.image_id == "38DBFEF37523B232A6733D7D9109A21FCAB41582"
    assert image.content_size == 1204783
    assert (image.width, image.height) == (1920, 1530)
    assert image.encoding_format == "jpeg"
    assert image.accent_color == "C6A105"
    assert image.creative_commons == "PublicNoRightsReserved"
    assert image.is_family_friendly is True
    assert image.thumbnail is not None
    assert (image.thumbnail.width, image.thumbnail.height) == (474, 377)
    assert image.insights_metadata is not None
    assert image.insights_metadata.pages_including_count == 1
    assert image.image_insights_token is not None
    assert image.image_insights_token.startswith("ccid_WTqn9r3a")
    assert image.date_published == "2021-02-06T20:45:00.0000000Z"
    assert image.host_page_url is not None
    assert image.host_page_url.startswith("https://www.publicdomainpictures.net/view-image.php")


def test_images_query_expansions_and_pivots(fixture_json: Load) -> None:
    images = Images.from_json(fixture_json("images_suggestions.json"))
    assert images.value == ()
    assert images.next_offset is None  # absent in the example: None, not 0
    assert images.next_offset_add_count == 0
    assert [q.text for q in images.query_expansions] == [
        "Microsoft Surface Pro 3",
        "Microsoft Surface RT",
        "Microsoft Surface Phone",
    ]
    assert images.query_expansions[0].display_text == "Pro 3"
    assert images.query_expansions[0].thumbnail_url == (
        "https://tse4.mm.bing.net/th?q=Microsoft+Surface+Pro+3..."
    )
    assert [p.pivot for p in images.pivot_suggestions] == ["microsoft", "surface"]
    first = images.pivot_suggestions[0].suggestions[0]
    assert first.text == "Contoso Surface"
    # The example repeats "searchLink"; the last value wins, as in any JSON parser.
    assert first.search_link == "https://api.cognitive.microsoft.com/api..."
    assert [s.text for s in images.pivot_suggestions[1].suggestions] == [
        "Microsoft Surface4",
        "Microsoft Tablet",
    ]
    assert images.similar_terms == ()


def test_image_insights(fixture_json: Load) -> None:
    insights = ImageInsights.from_json(fixture_json("image_insights.json"))
    assert insights.image_insights_token == "ccid_tmaGQ2eU*mid_D12339146CFE..."
    assert insights.best_representative_query == Query(
        text="Apple Pie",
        display_text="Apple Pie",
        web_search_url="https://www.bing.com/images/search?q=Apple+Pie",
    )
    assert insights.image_caption is not None
    assert insights.image_caption.caption == "Making Apple Pie"
    assert [q.text for q in insights.image_caption.related_searches] == ["apple pie"]
    assert insights.image_tags == ("pie", "dessert")
    assert [i.content_size for i in insights.pages_including] == [122540]
    assert [q.text for q in insights.related_searches] == ["Homemade Apple Pies Recipes"]
    similar = insights.visually_similar_images
    assert [i.content_url for i in similar] == [
        "http://contoso.net/images/8/8a/an_apple_pie.png",
        "http://contoso.net/images/pie2.jpg",
    ]
    # Width as a string and height as an integral float are tolerated.
    assert (similar[1].width, similar[1].height) == (640, 480)
    assert insights.visually_similar_products == ()


def test_image_insights_with_only_some_modules() -> None:
    insights = ImageInsights.from_json(
        {"_type": "ImageInsights", "imageCaption": {"caption": "only a caption"}}
    )
    assert insights.image_caption is not None
    assert insights.image_caption.caption == "only a caption"
    assert insights.visually_similar_images == ()
    assert insights.best_representative_query is None
    assert insights.image_insights_token is None


def test_trending(fixture_json: Load) -> None:
    trending = TrendingImages.from_json(fixture_json("trending.json"))
    assert [c.title for c in trending.categories] == [
        "Popular people searches",
        "Popular Halloween searches",
    ]
    tile = trending.categories[0].tiles[0]
    assert tile.query.text == "Smith"
    assert tile.query.display_text == "Mr. Smith"
    assert tile.image.id == "C3C60AE779A054D5CD80D3CACF0F3"
    assert tile.image.content_url == "http://www.contoso.com.au/assets/Uploads/smith-SH01.jpg"
    assert tile.image.thumbnail is not None
    assert tile.image.thumbnail.width == 288


def test_visual_search_default_tag_actions(fixture_json: Load) -> None:
    knowledge = ImageKnowledge.from_json(fixture_json("visual_search.json"))
    assert knowledge.image_insights_token == "bcid_AF8C9CA409421B..."
    assert len(knowledge.tags) == 3
    default = knowledge.default_tag
    assert default is not None
    assert default.display_name == ""
    assert [a.action_type for a in default.actions] == [
        "PagesIncluding",
        "ShoppingSources",
        "VisualSearch",
        "ImageById",
        "ProductVisualSearch",
        "RelatedSearches",
        "DocumentLevelSuggestions",
        "BestRepresentativeQuery",
    ]
    visual = next(knowledge.actions("VisualSearch"))
    assert visual.type_hint == "ImageModuleAction"
    assert (visual.current_offset, visual.next_offset, visual.total_estimated_matches) == (
        0,
        237,
        896,
    )
    assert [i.image_id for i in knowledge.visually_similar()] == [
        "1DCBA7AA6D23147F9DD06D47DB3A38EB25389"
    ]
    assert knowledge.visually_similar()[0].content_size == 87930
    pages = next(knowledge.actions("PagesIncluding"))
    assert [i.host_page_url for i in pages.images] == ["http://contoso.com/2017/09/20/car"]
    by_id = next(knowledge.actions("ImageById"))
    assert by_id.image is not None
    assert by_id.image.name == "Making Apple Pie"
    related = next(knowledge.actions("RelatedSearches"))
    assert related.images == ()
    assert [q.text for q in related.queries] == ["Homemade Apple Pies Recipes"]
    assert related.queries[0].thumbnail_url == "https://tse1.mm.bing.net/th?q=Homemade+Apple+Pies"
    suggestions = next(knowledge.actions("DocumentLevelSuggestions"))
    assert [q.text for q in suggestions.queries] == ["American Apple Pie"]
    brq = next(knowledge.actions("BestRepresentativeQuery"))
    assert brq.display_name == "Black Tea Length Cocktail Dresses"
    assert brq.service_url is not None
    assert brq.service_url.startswith("https://api.bing.microsoft.com/v7.0/images/search")
    shopping = next(knowledge.actions("ShoppingSources"))
    assert shopping.images == ()
    assert shopping.queries == ()


def test_visual_search_other_tags(fixture_json: Load) -> None:
    knowledge = ImageKnowledge.from_json(fixture_json("visual_search.json"))
    entity, text = knowledge.tags[1], knowledge.tags[2]
    assert entity.display_name == "Statue of Liberty"
    assert entity.thumbnail_url is not None
    assert [a.action_type for a in entity.actions] == ["Entity", "TextResults", "ImageResults"]
    assert text.display_name == "##TextRecognition"
    assert text.sources == ("OCR",)
    assert text.actions[0].url == "mailto:someone@outlook.com"
    # actions() walks the default tag first, then the others.
    assert [a.display_name for a in knowledge.actions("ImageResults")] == ["Statue of Liberty"]


def test_visual_search_without_default_tag() -> None:
    knowledge = ImageKnowledge.from_json(
        {"_type": "ImageKnowledge", "tags": [{"displayName": "x"}]}
    )
    assert knowledge.default_tag is None
    assert knowledge.visually_similar() == ()
    assert knowledge.image_insights_token is None


def test_error_response_examples(fixture_json: Load) -> None:
    errors = fixture_json("errors.json")
    (missing,) = parse_error_response(errors["parameter_missing"])
    assert (missing.code, missing.sub_code, missing.parameter) == (
        "InvalidRequest",
        "ParameterMissing",
        "q",
    )
    assert missing.message == "Required parameter is missing."
    (auth,) = parse_error_response(errors["authorization_missing"])
    assert (auth.code, auth.sub_code) == ("InvalidAuthorization", "AuthorizationMissing")
    assert auth.more_details == "Subscription key is not recognized."
    assert auth.parameter is None
    assert auth.value is None
    assert parse_error_response({"_type": "Images", "value": []}) == ()
    assert parse_error_response([1, 2]) == ()


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (Images, {"_type": "ImageInsights"}),
        (Images, {"value": []}),
        (Images, {"_type": "ErrorResponse", "errors": []}),
        (Images, []),
        (Images, "Images"),
        (ImageInsights, {"_type": "Images", "value": []}),
        (TrendingImages, {}),
        (ImageKnowledge, None),
    ],
)
def test_wrong_type_is_a_typed_error(model: Any, body: object) -> None:
    with pytest.raises(ResponseFormatError) as info:
        model.from_json(body)
    assert isinstance(info.value, ServerError)


def test_unknown_and_missing_fields_are_tolerated() -> None:
    images = Images.from_json(
        {
            "_type": "Images",
            "nextOffset": "45",
            "totalEstimatedMatches": 1e3,
            "brandNewField": {"nested": [1, 2, 3]},
            "value": [
                {"contentUrl": "https://e.example/a.jpg", "future": True},
                "not an object",
                {},
                {"width": True, "height": -1.5, "contentSize": "12 KB", "thumbnail": "odd"},
            ],
            "queryExpansions": {"not": "a list"},
        }
    )
    assert images.next_offset == 45
    assert images.total_estimated_matches == 1000
    assert len(images.value) == 3  # the string entry is skipped
    assert images.value[0].content_url == "https://e.example/a.jpg"
    assert images.value[1] == Image()
    odd = images.value[2]
    assert (odd.width, odd.height, odd.content_size, odd.thumbnail) == (None, None, 12288, None)
    assert images.query_expansions == ()

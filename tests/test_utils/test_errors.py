"""mmfusion.utils.errors: which failures are the user's, and how they read on one line."""
from mmfusion.utils.errors import UnreadableImageError, UserError, one_line, user_error_types


def test_one_line_joins_lines_and_drops_the_registry_prefix():
    err = FileNotFoundError('class `MasterAuxBackbone` in mmfusion/models/backbones/master_aux.py: class `DINOv3ViT` '
                            'in mmfusion/models/backbones/dinov3.py: Checkpoint x.pth not found.\n  Download it.')
    assert one_line(err) == 'Checkpoint x.pth not found. Download it.'


def test_one_line_of_a_key_error_is_not_quoted():
    assert one_line(KeyError('no such key')) == 'no such key'


def test_one_line_of_an_os_error_names_the_file():
    try:
        open('/nonexistent/mmfusion/x.json')
    except FileNotFoundError as e:
        assert one_line(e) == 'No such file or directory: /nonexistent/mmfusion/x.json'


def test_user_error_types_cover_user_errors_and_missing_files_only():
    types = user_error_types()
    assert isinstance(UnreadableImageError('x'), types) and isinstance(FileNotFoundError('x'), types)
    assert not isinstance(ValueError('x'), types) and not isinstance(RuntimeError('x'), types)
    assert issubclass(UnreadableImageError, UserError)


def test_user_error_types_include_other_modules_expected_errors():
    from mmfusion.apis.profiling import ProfileError
    assert ProfileError in user_error_types()
